//! Meridian's WAN emulator (tmp header).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(not(test), warn(clippy::expect_used))]

pub mod addr;
pub mod config;
pub mod core;
pub mod error;
pub mod flows;
pub mod limits;
pub mod link;
pub mod table;
