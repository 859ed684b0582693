//! The `meridian-wan` binary: `run --config` serves a topology file, and
//! `partition`, `status`, `heal` drive it through the control API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_meridian-wan");

/// Kills the child on drop, so a failing test leaves nothing behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(control: SocketAddr, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .args(["--control", &control.to_string()])
        .output()
        .unwrap();
    out
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn run_serves_a_topology_and_the_subcommands_drive_it() {
    let dir = std::env::temp_dir().join(format!("meridian-wan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let quic = free_port("127.1.1.1");
    let text = format!(
        "[[regions]]\nname = \"us-east\"\n[[regions.nodes]]\nname = \"n1\"\nzone = \"z\"\nquic_port = {quic}\n\
         [[regions]]\nname = \"eu-west\"\n\
         [[links]]\nregions = [\"us-east\", \"eu-west\"]\nrtt_ms = 70\n"
    );
    let path: PathBuf = dir.join("topology.toml");
    std::fs::write(&path, text).unwrap();
    let control: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let _child = Running(
        Command::new(BIN)
            .args([
                "run",
                "--config",
                path.to_str().unwrap(),
                "--control",
                &control.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Bounded wait for the control API.
    let start = Instant::now();
    loop {
        let out = cli(control, &["status"]);
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "meridian-wan run did not come up: {out:?}"
        );
        std::thread::sleep(ms(50));
    }
    let out = cli(control, &["partition", "us-east", "eu-west"]);
    assert!(out.status.success(), "{out:?}");
    let status = String::from_utf8(cli(control, &["status"]).stdout).unwrap();
    assert!(
        status.contains("partitions: us-east <-/-> eu-west"),
        "{status}"
    );
    assert!(status.contains("us-east -> eu-west"), "{status}");
    let json = String::from_utf8(cli(control, &["status", "--json"]).stdout).unwrap();
    let parsed: meridian_chaos::Status = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.listeners[0].name, "us-east/n1/quic");
    assert_eq!(
        parsed.listeners[0].listen,
        format!("127.1.1.1:{quic}").parse().unwrap()
    );
    let out = cli(control, &["isolate", "mars"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mars"));
    assert!(cli(control, &["heal"]).status.success());
    let status = String::from_utf8(cli(control, &["status"]).stdout).unwrap();
    assert!(status.contains("partitions: none"), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn subcommands_fail_clearly_without_an_emulator() {
    let control: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let out = cli(control, &["heal"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&control.to_string()));
    let out = Command::new(BIN).arg("run").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}
