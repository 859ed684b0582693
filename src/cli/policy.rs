//! `meridian policy ls`: every key prefix's consistency policy and the
//! default, as the connected node holds them (docs/consistency.md).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::ConnArgs;
use crate::wire::{PoliciesV1, PolicyV1};

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// List every prefix policy and the default: consistency, home region,
    /// replication and default staleness bound.
    Ls {
        #[command(flatten)]
        conn: ConnArgs,
    },
}

fn policy_json(prefix: Option<&[u8]>, p: &PolicyV1) -> serde_json::Value {
    json!({
        "prefix": prefix.map(|b| String::from_utf8_lossy(b).into_owned()),
        "consistency": p.consistency.as_str(),
        "home": p.home,
        "replication": p.replication.to_string(),
        "max_staleness_ms": p.max_staleness_ms,
    })
}

/// One table row: prefix, consistency, home, replication, bound.
fn row(prefix: &str, p: &PolicyV1) -> String {
    format!(
        "{prefix}\t{}\t{}\t{}\t{}",
        p.consistency.as_str(),
        p.home,
        p.replication,
        p.max_staleness_ms
    )
}

fn render(t: &PoliciesV1, as_json: bool) -> Vec<String> {
    if as_json {
        let prefixes: Vec<_> = t
            .prefixes
            .iter()
            .map(|p| policy_json(Some(&p.prefix), &p.policy))
            .collect();
        let v = json!({
            "local_region": t.local_region,
            "regions": t.regions,
            "default": policy_json(None, &t.default),
            "prefixes": prefixes,
        });
        return vec![v.to_string()];
    }
    let mut out = vec![
        format!("region {} of {}", t.local_region, t.regions.join(", ")),
        "PREFIX\tCONSISTENCY\tHOME\tREPLICATION\tMAX_STALENESS_MS".to_string(),
    ];
    out.extend(
        t.prefixes
            .iter()
            .map(|p| row(&String::from_utf8_lossy(&p.prefix), &p.policy)),
    );
    out.push(row("(default)", &t.default));
    out
}

pub(crate) async fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Ls { conn } => {
            let client = conn.connect().await?;
            let table = client.policies().await;
            client.close().await;
            for line in render(&table?, conn.json) {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ConsistencyV1, PrefixPolicyV1, ReplicationV1};

    #[test]
    fn lists_prefixes_then_the_default() {
        let policy = |c, home: &str, r| PolicyV1 {
            consistency: c,
            home: home.into(),
            replication: r,
            max_staleness_ms: 5_000,
        };
        let t = PoliciesV1 {
            local_region: "eu".into(),
            regions: vec!["us".into(), "eu".into()],
            default: policy(ConsistencyV1::Strong, "us", ReplicationV1::Async),
            prefixes: vec![PrefixPolicyV1 {
                prefix: b"ads/".to_vec(),
                policy: policy(ConsistencyV1::Eventual, "eu", ReplicationV1::Sync(1)),
            }],
        };
        let lines = render(&t, false);
        assert_eq!(lines[0], "region eu of us, eu");
        assert_eq!(lines[2], "ads/\teventual\teu\tsync-1\t5000");
        assert_eq!(lines[3], "(default)\tstrong\tus\tasync\t5000");
        let v: serde_json::Value = serde_json::from_str(&render(&t, true)[0]).unwrap();
        assert_eq!(v["prefixes"][0]["prefix"], "ads/");
        assert_eq!(v["prefixes"][0]["replication"], "sync-1");
        assert_eq!(v["default"]["prefix"], serde_json::Value::Null);
        assert_eq!(v["default"]["home"], "us");
    }
}
