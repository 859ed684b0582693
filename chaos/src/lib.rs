//! Meridian's WAN emulator: a userspace proxy that sits in the real data
//! path between regions on loopback and applies each region pair's
//! latency, jitter and loss, and partitions switched on and off at run
//! time. UDP (QUIC, gossip) is proxied per flow, TCP (the etcd comparison,
//! the HTTP gateway) per connection. See `chaos/README.md` for the
//! addressing scheme, the control API and the limits.
//!
//! Start it in-process with [`Emulator::start`] and drive it with a
//! [`Controller`]; the `meridian-wan` binary wraps the same calls.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use meridian_chaos::{Emulator, WanConfig};
//! let config = WanConfig::from_file("regions/wan-3.toml".as_ref())?;
//! let wan = Emulator::start(config).await?;
//! let control = wan.controller();
//! control.cut("us-east", "eu-west").await?;
//! control.heal().await?;
//! println!("{}", control.status().await?.render());
//! wan.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout: [`link`] (the per-packet model), [`table`] (regions, links,
//! partitions) and [`core`] (the datagram delay queue) are sans-IO and
//! tested with a seeded rng and time passed in; [`addr`] and [`flows`] are
//! the addressing and flow-table logic; `engine`, `udp` and `tcp` are the
//! IO around them; [`control`] is the line-based control API.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(not(test), warn(clippy::expect_used))]

pub mod addr;
pub mod config;
pub mod control;
mod controller;
pub mod core;
mod emulator;
mod engine;
pub mod error;
pub mod flows;
pub mod limits;
pub mod link;
pub mod status;
pub mod table;
mod tcp;
mod udp;

pub use config::{LinkSpec, ListenerSpec, NodePorts, Protocol, SourceSpec, WanConfig, WanLimits};
pub use controller::Controller;
pub use emulator::Emulator;
pub use engine::LinkChange;
pub use error::{ConfigError, ControlError, StartError};
pub use link::LinkParams;
pub use status::{LinkStatus, ListenerStatus, Status, StreamCounters};
pub use table::{Partition, UNCLASSIFIED};
