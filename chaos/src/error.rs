//! The emulator's errors, one enum per boundary: configuration, start-up,
//! and control commands. Each variant says what it means for the caller and
//! for the emulator's state.

use std::io;
use std::net::SocketAddr;

/// A control command (partition, heal, link change, status) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The command named a region the topology does not have. Nothing
    /// changed.
    #[error("unknown region {0:?}")]
    UnknownRegion(String),
    /// The command was malformed or out of range (the text says which part).
    /// Nothing changed.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// The emulator has shut down; the command was not applied.
    #[error("the emulator has stopped")]
    Stopped,
}

/// The configuration (topology file or [`crate::WanConfig`]) is wrong.
/// Nothing was started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The file is not TOML of the expected shape.
    #[error("parsing the topology: {0}")]
    Parse(String),
    /// A field broke a rule; `field` is its path in the file
    /// (`links[2].rtt_ms`, `wan.control_addr`).
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// The rule and the value found.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The emulator could not start. Everything it had started is stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A socket could not be bound (address in use, or not a local
    /// address). `what` names the listener.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Listener name, or `control`.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}
