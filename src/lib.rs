//! Meridian: a geo-distributed, multi-region metadata service.
//!
//! See `docs/architecture.md` for the bird's-eye view and the code map. In
//! short: [`clock`] stamps every write with a hybrid logical clock,
//! [`storage`] keeps MVCC versions in fjall, [`raft`] replicates each range
//! in a Raft group (a single node is a group of one voter), [`engine`]
//! validates and routes every request to its range's group (reads, GC), [`wire`] holds the
//! versioned client protocol, [`transport`] the QUIC + mutual-TLS endpoint,
//! [`server`] assembles a node, [`client`] is the Rust SDK, [`gateway`] the
//! HTTP/JSON gateway, and [`cli`] the `meridian` command.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(not(test), warn(clippy::expect_used))]

pub mod certs;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod coord;
pub mod decide;
pub mod discovery;
pub mod engine;
pub mod error_code;
pub mod gateway;
pub mod limits;
pub mod membership;
pub mod metric_handles;
pub mod peer;
pub mod raft;
pub mod replication;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod trace_context;
pub mod transport;
pub mod types;
pub mod watch;
pub mod wire;
