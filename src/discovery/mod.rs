//! Service discovery on top of leases and replication, as pure rules: the
//! registry's key layout, an instance's record and its limits, and the
//! order lookups return instances in.
//!
//! An instance registers in its own region: its record is a key
//! `services/<region>/<name>/<id>` attached to a lease of that region, so it
//! disappears when the instance stops keeping the lease alive (health by
//! keepalive). Each region's part of the registry (`services/<region>/`) is
//! a strong prefix homed in that region, so registration needs no
//! cross-region round trip, and it replicates to every other region like
//! any data: a lookup anywhere reads every region's part locally and
//! returns the caller's region's instances first, then the other regions'
//! by the round trip this node measured to them (gossip), so a client
//! falls back to the nearest region when its own has none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The registry's key prefix.
pub const SERVICE_PREFIX: &str = "services/";
/// Longest service name or instance id, bytes.
pub const MAX_SERVICE_NAME_BYTES: usize = 128;
/// Most addresses one instance publishes.
pub const MAX_SERVICE_ADDRS: usize = 16;
/// Longest address, bytes.
pub const MAX_SERVICE_ADDR_BYTES: usize = 256;
/// Most metadata entries per instance.
pub const MAX_SERVICE_META: usize = 32;
/// Longest metadata key or value, bytes.
pub const MAX_SERVICE_META_BYTES: usize = 1_024;
/// Most instances a lookup returns.
pub const MAX_LOOKUP_INSTANCES: usize = 1_000;

/// One registered instance (stored as JSON, `"v": 1`, so `kv get` and the
/// HTTP gateway show it as it is).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// Record format version (1).
    pub v: u32,
    /// The service.
    pub name: String,
    /// The instance, unique within the service and region.
    pub id: String,
    /// Where it listens (`host:port`, URLs: the service's own convention).
    pub addrs: Vec<String>,
    /// Free-form metadata (version, weight...).
    pub meta: BTreeMap<String, String>,
    /// The region it registered in (set by the node).
    pub region: String,
    /// Its zone (as the client said; empty when unknown).
    pub zone: String,
}

/// A record over the limits, or a malformed name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service record: {0}")]
pub struct RecordError(pub String);

fn check_segment(what: &str, s: &str) -> Result<(), RecordError> {
    if s.is_empty() || s.len() > MAX_SERVICE_NAME_BYTES {
        return Err(RecordError(format!(
            "{what} {s:?} must be 1..={MAX_SERVICE_NAME_BYTES} bytes"
        )));
    }
    if s.contains('/') || s.chars().any(char::is_control) {
        return Err(RecordError(format!(
            "{what} {s:?} must not contain '/' or control characters"
        )));
    }
    Ok(())
}

impl ServiceInstance {
    /// Checks the record against the limits above.
    pub fn validate(&self) -> Result<(), RecordError> {
        check_segment("service name", &self.name)?;
        check_segment("instance id", &self.id)?;
        if self.addrs.is_empty() || self.addrs.len() > MAX_SERVICE_ADDRS {
            return Err(RecordError(format!(
                "an instance publishes 1..={MAX_SERVICE_ADDRS} addresses, not {}",
                self.addrs.len()
            )));
        }
        if let Some(a) = self
            .addrs
            .iter()
            .find(|a| a.is_empty() || a.len() > MAX_SERVICE_ADDR_BYTES)
        {
            return Err(RecordError(format!(
                "address {a:?} must be 1..={MAX_SERVICE_ADDR_BYTES} bytes"
            )));
        }
        if self.meta.len() > MAX_SERVICE_META {
            return Err(RecordError(format!(
                "at most {MAX_SERVICE_META} metadata entries, not {}",
                self.meta.len()
            )));
        }
        if let Some((k, _)) = self.meta.iter().find(|(k, v)| {
            k.is_empty() || k.len() > MAX_SERVICE_META_BYTES || v.len() > MAX_SERVICE_META_BYTES
        }) {
            return Err(RecordError(format!(
                "metadata {k:?}: keys 1..={MAX_SERVICE_META_BYTES} bytes, values up to {MAX_SERVICE_META_BYTES}"
            )));
        }
        if self.zone.len() > MAX_SERVICE_NAME_BYTES {
            return Err(RecordError(format!(
                "zone must be at most {MAX_SERVICE_NAME_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// The stored value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored value (`None`: not a record of this format).
    pub fn decode(bytes: &[u8]) -> Option<ServiceInstance> {
        serde_json::from_slice::<ServiceInstance>(bytes)
            .ok()
            .filter(|r| r.v == 1)
    }
}

/// The prefix of `region`'s part of the registry.
pub fn region_prefix(region: &str) -> String {
    format!("{SERVICE_PREFIX}{region}/")
}

/// The prefix of service `name`'s instances in `region`.
pub fn service_prefix(region: &str, name: &str) -> String {
    format!("{SERVICE_PREFIX}{region}/{name}/")
}

/// The key of one instance.
pub fn instance_key(region: &str, name: &str, id: &str) -> String {
    format!("{SERVICE_PREFIX}{region}/{name}/{id}")
}

/// `(region, name, id)` of a registry key.
pub fn parse_key(key: &[u8]) -> Option<(String, String, String)> {
    let s = std::str::from_utf8(key)
        .ok()?
        .strip_prefix(SERVICE_PREFIX)?;
    let mut parts = s.splitn(3, '/');
    let (region, name, id) = (parts.next()?, parts.next()?, parts.next()?);
    (!region.is_empty() && !name.is_empty() && !id.is_empty() && !id.contains('/'))
        .then(|| (region.to_string(), name.to_string(), id.to_string()))
}

/// The order of regions for a lookup from `local`: `local` first, then the
/// others by `rtt_ms` (this node's measurement), unmeasured ones last, ties
/// by name.
pub fn region_order(
    local: &str,
    regions: &[String],
    rtt_ms: &BTreeMap<String, f64>,
) -> Vec<String> {
    let mut others: Vec<&String> = regions.iter().filter(|r| r.as_str() != local).collect();
    others.sort_by(|a, b| {
        let (ra, rb) = (rtt_ms.get(*a), rtt_ms.get(*b));
        match (ra, rb) {
            (Some(x), Some(y)) => x.total_cmp(y).then_with(|| a.cmp(b)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.cmp(b),
        }
    });
    let mut out = Vec::with_capacity(regions.len());
    if regions.iter().any(|r| r == local) {
        out.push(local.to_string());
    }
    out.extend(others.into_iter().cloned());
    out
}

/// Orders instances for a caller in `local` (zone `zone`, empty: unknown):
/// by region as [`region_order`], within a region the caller's zone first,
/// then by id.
pub fn order_instances(
    mut instances: Vec<ServiceInstance>,
    region_order: &[String],
    zone: &str,
) -> Vec<ServiceInstance> {
    let rank = |r: &str| {
        region_order
            .iter()
            .position(|x| x == r)
            .unwrap_or(usize::MAX)
    };
    instances.sort_by(|a, b| {
        rank(&a.region)
            .cmp(&rank(&b.region))
            .then_with(|| (a.zone != zone).cmp(&(b.zone != zone)))
            .then_with(|| a.id.cmp(&b.id))
    });
    instances
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(region: &str, zone: &str, id: &str) -> ServiceInstance {
        ServiceInstance {
            v: 1,
            name: "api".into(),
            id: id.into(),
            addrs: vec!["10.0.0.1:80".into()],
            meta: BTreeMap::new(),
            region: region.into(),
            zone: zone.into(),
        }
    }

    #[test]
    fn lookups_prefer_the_local_region_then_the_nearest_by_rtt() {
        let regions: Vec<String> = ["ap-south", "eu-west", "us-east"]
            .map(String::from)
            .to_vec();
        let rtt = BTreeMap::from([
            ("ap-south".to_string(), 140.0),
            ("us-east".to_string(), 70.0),
        ]);
        assert_eq!(
            region_order("eu-west", &regions, &rtt),
            vec!["eu-west", "us-east", "ap-south"]
        );
        // An unmeasured region goes last.
        let partial = BTreeMap::from([("ap-south".to_string(), 140.0)]);
        assert_eq!(
            region_order("eu-west", &regions, &partial),
            vec!["eu-west", "ap-south", "us-east"]
        );
        let order = region_order("eu-west", &regions, &rtt);
        let got = order_instances(
            vec![
                inst("ap-south", "a", "1"),
                inst("us-east", "b", "2"),
                inst("eu-west", "x", "3"),
                inst("eu-west", "mine", "4"),
            ],
            &order,
            "mine",
        );
        let ids: Vec<&str> = got.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, vec!["4", "3", "2", "1"]);
    }

    #[test]
    fn keys_round_trip_and_records_respect_their_limits() {
        let key = instance_key("eu-west", "api", "i-1");
        assert_eq!(
            parse_key(key.as_bytes()),
            Some(("eu-west".into(), "api".into(), "i-1".into()))
        );
        assert!(key.starts_with(&service_prefix("eu-west", "api")));
        assert!(parse_key(b"services/eu-west/api").is_none());
        assert!(parse_key(b"other/eu-west/api/x").is_none());
        let ok = inst("eu-west", "z", "i-1");
        assert!(ok.validate().is_ok());
        assert_eq!(ServiceInstance::decode(&ok.encode()), Some(ok.clone()));
        let mut bad = ok.clone();
        bad.name = "a/b".into();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.addrs = vec![];
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.addrs = vec!["x".repeat(MAX_SERVICE_ADDR_BYTES + 1)];
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.meta = (0..=MAX_SERVICE_META)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.id = "i".repeat(MAX_SERVICE_NAME_BYTES + 1);
        assert!(bad.validate().is_err());
        assert!(ServiceInstance::decode(b"{\"v\":2}").is_none());
    }
}
