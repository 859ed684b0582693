//! The cluster key file: 32 random bytes every node of a cluster shares,
//! from which gossip packet keys are derived (`seal.rs`).
//!
//! Format v1, one line of text: `meridian-cluster-key-v1 <64 hex digits>\n`.
//! Written with mode 0600 through a temporary file, fsynced and renamed into
//! place, then read back and compared.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

/// Length of a cluster key in bytes.
pub const CLUSTER_KEY_LEN: usize = 32;
/// Largest key file read (the real one is 88 bytes).
pub const MAX_KEY_FILE_BYTES: u64 = 4096;
/// Unix permissions of a key file: owner read/write only.
pub const KEY_FILE_MODE: u32 = 0o600;

const KEY_FILE_TAG: &str = "meridian-cluster-key-v1";

/// Why a key file could not be made or read. Generation either fully
/// replaced the file or did not touch it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterKeyError {
    /// The file exists and replacing it was not asked for; nothing written.
    /// Replacing the key cuts this node off from nodes with the old key.
    #[error("{} already exists; refusing to replace the cluster key (use --force)", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file system operation failed; the message names the file.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a v1 cluster key file. Regenerate it on one node
    /// and copy it to all.
    #[error("{} is not a cluster key file: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The system random source failed; nothing written.
    #[error("system random source failed")]
    Random,
}

/// Creates a new random cluster key at `path` (mode 0600) and returns it.
/// Refuses to replace an existing file unless `force`.
pub fn generate_cluster_key(path: &Path, force: bool) -> Result<[u8; 32], ClusterKeyError> {
    if !force && path.exists() {
        return Err(ClusterKeyError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    let mut key = [0u8; CLUSTER_KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| ClusterKeyError::Random)?;
    write_atomic(path, encode(&key).as_bytes())?;
    // Paired check: what we wrote must read back as the same key.
    let back = load_cluster_key(path)?;
    if back != key {
        return Err(ClusterKeyError::Format {
            path: path.to_owned(),
            reason: "read back differs from what was written",
        });
    }
    tracing::info!(path = %path.display(), "created cluster key");
    Ok(key)
}

/// Reads a cluster key file written by [`generate_cluster_key`].
pub fn load_cluster_key(path: &Path) -> Result<[u8; 32], ClusterKeyError> {
    let io_err = |action, source| ClusterKeyError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(|e| io_err("open", e))?;
    warn_if_readable_by_others(path, &file);
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| io_err("read", e))?;
    let format = |reason| ClusterKeyError::Format {
        path: path.to_owned(),
        reason,
    };
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format("larger than 4 KiB"));
    }
    let hex = text
        .trim_end()
        .strip_prefix(KEY_FILE_TAG)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(|| format("does not start with `meridian-cluster-key-v1 `"))?;
    decode_hex(hex).ok_or_else(|| format("expected 64 hex digits after the tag"))
}

fn encode(key: &[u8; CLUSTER_KEY_LEN]) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("{KEY_FILE_TAG} {hex}\n")
}

fn decode_hex(hex: &str) -> Option<[u8; CLUSTER_KEY_LEN]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 2 * CLUSTER_KEY_LEN {
        return None;
    }
    let mut key = [0u8; CLUSTER_KEY_LEN];
    for (out, pair) in key.iter_mut().zip(bytes.chunks_exact(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *out = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(key)
}

fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ClusterKeyError> {
    let io_err = |action, p: &Path, source| ClusterKeyError::Io {
        action,
        path: p.to_owned(),
        source,
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove stale", &tmp, e)),
    }
    let mut file = open_new(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("write", &tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| io_err("rename into place", path, e))?;
    // The key is not regenerable without re-keying the cluster: make the
    // rename itself durable.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("sync directory of", path, e))?;
    }
    Ok(())
}

#[cfg(unix)]
fn open_new(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_FILE_MODE)
        .open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path) -> io::Result<fs::File> {
    // No Unix permission bits here; the directory's ACL protects the key.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, file: &fs::File) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "cluster key file is readable by other users; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path, _file: &fs::File) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let key = generate_cluster_key(&path, false).unwrap();
        assert_eq!(load_cluster_key(&path).unwrap(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(matches!(
            generate_cluster_key(&path, false),
            Err(ClusterKeyError::AlreadyExists { .. })
        ));
        let replaced = generate_cluster_key(&path, true).unwrap();
        assert_ne!(replaced, key);
    }

    #[test]
    fn frozen_format_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let mut text = String::from("meridian-cluster-key-v1 ");
        text.push_str(&"0a".repeat(32));
        text.push('\n');
        fs::write(&path, &text).unwrap();
        assert_eq!(load_cluster_key(&path).unwrap(), [0x0a; 32]);
        assert_eq!(encode(&[0x0a; 32]), text);

        for bad in [
            "",
            "meridian-cluster-key-v2 00",
            &format!("meridian-cluster-key-v1 {}", "0".repeat(63)),
            &format!("meridian-cluster-key-v1 {}", "zz".repeat(32)),
        ] {
            fs::write(&path, bad).unwrap();
            assert!(
                matches!(load_cluster_key(&path), Err(ClusterKeyError::Format { .. })),
                "{bad:?}"
            );
        }
        let err = load_cluster_key(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
