//! `meridian policy ls|set|rm`: every key prefix's consistency policy and
//! the default, as the connected node holds them, and run-time changes
//! through the control range (docs/consistency.md, "Policies at run
//! time").

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::ConnArgs;
use crate::replication::policy::{Consistency, Replication};
use crate::wire::{PoliciesV1, PolicyV1, SetPolicyV1};

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// List every prefix policy and the default: consistency, home region,
    /// replication and default staleness bound.
    Ls {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Change a prefix's policy (or the default's with --default) in the
    /// control range; every node applies it without a restart. Options not
    /// given keep their current value. Needs an admin certificate. Turning a
    /// prefix strong or moving a strong prefix's home returns once its
    /// handoff is done: the prefix takes no writes meanwhile, and every
    /// write acknowledged before is at the new home when it returns (repeat
    /// a handoff that failed to resume it).
    Set {
        /// The key prefix (a new prefix gets the policy now governing its keys,
        /// changed by the options).
        #[arg(required_unless_present = "default")]
        prefix: Option<String>,
        /// Change the default policy (keys under no prefix policy).
        #[arg(long, conflicts_with = "prefix")]
        default: bool,
        /// strong, causal or eventual.
        #[arg(long)]
        consistency: Option<String>,
        /// The home region.
        #[arg(long)]
        home: Option<String>,
        /// async or sync-N.
        #[arg(long)]
        replication: Option<String>,
        /// Default staleness bound of bounded reads, ms.
        #[arg(long = "max-staleness")]
        max_staleness_ms: Option<u64>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Remove a prefix's policy; its keys fall back to the default (same
    /// rules as `set`). Needs an admin certificate.
    Rm {
        /// The key prefix.
        prefix: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// The request `policy set`'s arguments describe (checked before anything
/// is sent).
fn set_request(
    prefix: Option<String>,
    consistency: Option<&str>,
    home: Option<String>,
    replication: Option<&str>,
    max_staleness_ms: Option<u64>,
) -> anyhow::Result<SetPolicyV1> {
    let consistency = consistency
        .map(str::parse::<Consistency>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--consistency: {e}"))?;
    let replication = replication
        .map(str::parse::<Replication>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--replication: {e}"))?;
    if consistency.is_none()
        && home.is_none()
        && replication.is_none()
        && max_staleness_ms.is_none()
    {
        anyhow::bail!(
            "nothing to change: give at least one of --consistency, --home, --replication, --max-staleness"
        );
    }
    if prefix.as_deref() == Some("") {
        anyhow::bail!("the prefix is empty: change the default policy with --default");
    }
    Ok(SetPolicyV1 {
        prefix: prefix.map(String::into_bytes),
        consistency: consistency.map(Into::into),
        home,
        replication: replication.map(Into::into),
        max_staleness_ms,
    })
}

fn print_changed(what: &str, c: &crate::client::PolicyChanged, as_json: bool) {
    if as_json {
        let mut v = table_json(&c.policies);
        v["version"] = json!(c.version);
        v["epoch"] = json!(c.epoch);
        println!("{v}");
        return;
    }
    println!("{what} (table version {}, epoch {})", c.version, c.epoch);
    for line in render(&c.policies, false) {
        println!("{line}");
    }
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

fn table_json(t: &PoliciesV1) -> serde_json::Value {
    let prefixes: Vec<_> = t
        .prefixes
        .iter()
        .map(|p| policy_json(Some(&p.prefix), &p.policy))
        .collect();
    json!({
        "local_region": t.local_region,
        "regions": t.regions,
        "default": policy_json(None, &t.default),
        "prefixes": prefixes,
    })
}

fn render(t: &PoliciesV1, as_json: bool) -> Vec<String> {
    if as_json {
        return vec![table_json(t).to_string()];
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
        PolicyCommand::Set {
            prefix,
            default: _,
            consistency,
            home,
            replication,
            max_staleness_ms,
            conn,
        } => {
            let req = set_request(
                prefix,
                consistency.as_deref(),
                home,
                replication.as_deref(),
                max_staleness_ms,
            )?;
            let client = conn.connect().await?;
            let changed = client.set_policy(req).await;
            client.close().await;
            print_changed("policy set", &changed?, conn.json);
        }
        PolicyCommand::Rm { prefix, conn } => {
            let client = conn.connect().await?;
            let changed = client.remove_policy(prefix.as_bytes()).await;
            client.close().await;
            print_changed("policy removed", &changed?, conn.json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ConsistencyV1, PrefixPolicyV1, ReplicationV1};

    #[test]
    fn set_arguments_are_checked_before_anything_is_sent() {
        let ok = set_request(
            Some("ads/".into()),
            Some("eventual"),
            None,
            Some("sync-1"),
            None,
        )
        .unwrap();
        assert_eq!(ok.prefix.as_deref(), Some(&b"ads/"[..]));
        assert_eq!(ok.consistency, Some(ConsistencyV1::Eventual));
        assert_eq!(ok.replication, Some(ReplicationV1::Sync(1)));
        let default = set_request(None, None, Some("eu".into()), None, Some(10)).unwrap();
        assert_eq!(default.prefix, None);
        let err = |r: anyhow::Result<SetPolicyV1>| r.unwrap_err().to_string();
        assert!(err(set_request(None, Some("linear"), None, None, None)).contains("--consistency"));
        assert!(err(set_request(None, None, None, Some("sync-0"), None)).contains("--replication"));
        assert!(err(set_request(Some("a/".into()), None, None, None, None))
            .contains("nothing to change"));
        assert!(
            err(set_request(Some(String::new()), None, None, None, Some(1))).contains("--default")
        );
    }

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
