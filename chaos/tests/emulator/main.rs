//! Integration tests of the WAN emulator over real loopback sockets: one
//! test binary, one module per concern. Every wait is bounded (`WAIT` or
//! less); every emulator, server and client lives on the test's runtime and
//! stops with it, pass or fail. Measured figures are printed (run with
//! `--nocapture` to see them); only generous bounds are asserted, since
//! the machine is shared.

mod addressing;
mod cli;
mod common;
mod control_api;
mod quic;
mod tcp;
mod udp;
