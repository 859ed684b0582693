//! The engine's service registry (rules: `crate::discovery`): register an
//! instance under a lease in this node's region, and look a service up in
//! every region's part of the registry, read locally.

use std::collections::BTreeMap;

use super::{Engine, WriteOutcome};
use crate::discovery::{
    instance_key, order_instances, region_order, region_prefix, service_prefix, ServiceInstance,
    MAX_LOOKUP_INSTANCES,
};
use crate::error_code::{ApiError, ErrorCode};
use crate::replication::policy::Consistency;
use crate::replication::read::ReadLevel;

impl Engine {
    /// Registers `instance` in this node's region, attached to `lease`:
    /// its record disappears when the lease expires. The region's part of
    /// the registry must be a strong prefix homed here.
    pub async fn service_register(
        &self,
        mut instance: ServiceInstance,
        lease: u64,
    ) -> Result<WriteOutcome, ApiError> {
        let local = self.regions.local.clone();
        instance.v = 1;
        instance.region = local.clone();
        instance
            .validate()
            .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.to_string()))?;
        let key = instance_key(&local, &instance.name, &instance.id);
        let (_, policy) = self.policy_of(key.as_bytes());
        let homed_here = policy.home == local || self.regions.all.len() <= 1;
        if policy.consistency != Consistency::Strong || !homed_here {
            let prefix = region_prefix(&local);
            return Err(ApiError::new(
                ErrorCode::CoordinationNotAllowed,
                format!(
                    "the registry of region {local} ({prefix}) must be a strong prefix homed in {local}: \
                     meridian policy set {prefix} --consistency strong --home {local}"
                ),
            ));
        }
        self.put_leased(key.into_bytes(), instance.encode(), lease)
            .await
    }

    /// Service `name`'s instances in every region, read from this
    /// replica (eventual: a registration or expiry in another region shows
    /// here after replication), this region's first, then the others by
    /// `rtt_ms` (this node's measured round trip per region), the caller's
    /// `zone` first within a region.
    pub async fn service_lookup(
        &self,
        name: &str,
        zone: &str,
        rtt_ms: &BTreeMap<String, f64>,
    ) -> Result<Vec<ServiceInstance>, ApiError> {
        let probe = ServiceInstance {
            v: 1,
            name: name.to_string(),
            id: "x".into(),
            addrs: vec!["x".into()],
            meta: BTreeMap::new(),
            region: String::new(),
            zone: String::new(),
        };
        probe
            .validate()
            .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.to_string()))?;
        let mut found = Vec::new();
        for region in &self.regions.all {
            let prefix = service_prefix(region, name).into_bytes();
            let end = crate::types::prefix_end(&prefix);
            let mut start = prefix.clone();
            while found.len() < MAX_LOOKUP_INSTANCES {
                let page = self
                    .range_level(
                        start,
                        end.clone(),
                        MAX_LOOKUP_INSTANCES,
                        ReadLevel::Eventual,
                    )
                    .await?;
                found.extend(
                    page.value
                        .kvs
                        .iter()
                        .filter_map(|kv| ServiceInstance::decode(&kv.value))
                        .filter(|i| i.name == name && &i.region == region),
                );
                match page.value.next {
                    Some(next) => start = next,
                    None => break,
                }
            }
        }
        found.truncate(MAX_LOOKUP_INSTANCES);
        let order = region_order(&self.regions.local, &self.regions.all, rtt_ms);
        Ok(order_instances(found, &order, zone))
    }
}
