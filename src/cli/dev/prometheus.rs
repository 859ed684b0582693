//! `meridian dev`'s Prometheus configuration: `prometheus.yml` scraping
//! every node's `/metrics` over HTTPS with the dev client certificate
//! (job `meridian`, target labels `region` and
//! `node`, which the dashboards and alerts in dashboards/ filter by), and
//! `alerts.yml`, the alerting rules of dashboards/alerts.yml as this build
//! embeds them.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::topology::RegionPlan;

/// The alerting rules of dashboards/alerts.yml, written beside the config.
const ALERTS: &str = include_str!("../../../dashboards/alerts.yml");

/// Scrape and rule evaluation interval of the generated config: short, for
/// a development cluster whose faults one wants to see at once.
const SCRAPE_INTERVAL: &str = "2s";

/// Prometheus's default web port; the printed command adds the port offset.
const PROMETHEUS_PORT: u16 = 9090;

/// Writes `prometheus.yml` and `alerts.yml` in `dir`; returns the config's path.
pub fn write_config(dir: &Path, layout: &[RegionPlan]) -> anyhow::Result<PathBuf> {
    std::fs::write(dir.join("alerts.yml"), ALERTS)?;
    let path = dir.join("prometheus.yml");
    // Absolute certificate paths: the config works wherever it is copied.
    let certs = std::fs::canonicalize(dir)?.join("certs");
    std::fs::write(&path, config_text(layout, &certs))?;
    Ok(path)
}

/// The config: one static target per node, at the HTTP address it binds
/// (not through the WAN emulator: a monitoring agent sits beside the node,
/// and a partition drill must not look like dead nodes).
fn config_text(layout: &[RegionPlan], certs: &Path) -> String {
    let certs = certs.display();
    let mut text = format!(
        "# Written by `meridian dev` for its cluster; rewritten at every start.\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         rule_files:\n  - alerts.yml\n\
         scrape_configs:\n  - job_name: meridian\n    metrics_path: /metrics\n\
         # Every node's gateway is HTTPS with client certificates (server.http_tls):\n\
         # scrape with the dev client certificate.\n\
         \x20   scheme: https\n    tls_config:\n      ca_file: {certs}/ca.pem\n\
         \x20     cert_file: {certs}/client.pem\n      key_file: {certs}/client.key\n\
         \x20   static_configs:\n"
    );
    for region in layout {
        for n in &region.nodes {
            let _ = write!(
                text,
                "      - targets: [\"{}\"]\n        labels:\n          region: \"{}\"\n          node: \"{}\"\n",
                n.http_bind(),
                region.name,
                n.name
            );
        }
    }
    text
}

/// Prints how to start Prometheus on the config.
pub fn announce(config: &Path, dir: &Path, port_offset: u16) {
    let port = PROMETHEUS_PORT.saturating_add(port_offset);
    println!(
        "meridian dev: Prometheus config (every node's /metrics, with the alerts of dashboards/) in {}",
        config.display()
    );
    println!(
        "meridian dev: start Prometheus: prometheus --config.file={} --storage.tsdb.path={} \
         --web.listen-address=127.0.0.1:{port}",
        config.display(),
        dir.join("prometheus-data").display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_is_a_target_labelled_by_region_and_node() {
        let topo = super::super::topology::load_topology(None).unwrap().0;
        let layout = super::super::topology::plan(&topo, 0).unwrap();
        let text = config_text(&layout, Path::new("/dev-dir/certs"));
        assert!(text.contains("scheme: https"), "{text}");
        assert!(
            text.contains("cert_file: /dev-dir/certs/client.pem"),
            "{text}"
        );
        let nodes: Vec<_> = layout.iter().flat_map(|r| &r.nodes).collect();
        assert_eq!(nodes.len(), 9);
        assert_eq!(text.matches("- targets:").count(), nodes.len());
        for region in &layout {
            for n in &region.nodes {
                let target = format!(
                    "- targets: [\"{}\"]\n        labels:\n          region: \"{}\"\n          node: \"{}\"\n",
                    n.http_bind(),
                    region.name,
                    n.name
                );
                assert!(text.contains(&target), "{target} missing from\n{text}");
            }
        }
        assert!(text.contains("rule_files:\n  - alerts.yml\n"));
        assert!(text.contains("job_name: meridian"));
    }
}
