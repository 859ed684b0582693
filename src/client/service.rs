//! Service discovery in the SDK: register an instance (kept alive by a
//! lease), look a service up (the caller's region first, then the nearest
//! by measured round trip), and watch its instances come and go.

use std::sync::Arc;
use std::time::Duration;

use super::watch_stream::{WatchOptions, WatchStream};
use super::{Client, ClientError, LeaseKeeper, WatchEnd};
use crate::discovery::{parse_key, ServiceInstance, SERVICE_PREFIX};
use crate::types::Timestamp;
use crate::watch::WatchEvent;
use crate::wire::{RequestV1, ResponseBodyV1, ServiceInstanceV1};

/// A registered instance, kept alive until [`ServiceRegistration::deregister`]
/// or until dropped (then its lease runs out within its TTL).
pub struct ServiceRegistration {
    client: Arc<Client>,
    /// The lease the record is attached to.
    pub lease: u64,
    keeper: LeaseKeeper,
}

impl ServiceRegistration {
    /// Waits until the registration is lost (its lease expired: the
    /// instance was unreachable for its TTL).
    pub async fn lost(&mut self) {
        self.keeper.lost().await;
    }

    /// Removes the instance at once (revokes its lease).
    pub async fn deregister(self) -> Result<(), ClientError> {
        self.keeper.stop();
        self.client.lease_revoke(self.lease).await
    }

    /// Stops keeping the registration alive and leaves it to expire.
    pub fn detach(self) {
        self.keeper.stop();
    }
}

/// A change of a watched service's instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceChange {
    /// An instance registered or changed its record.
    Up(ServiceInstance),
    /// An instance left (deregistered, or its lease expired).
    Down {
        /// Its region.
        region: String,
        /// Its id.
        id: String,
        /// When (HLC).
        at: Timestamp,
    },
}

/// The instances of one service as they change (a watch of the registry,
/// filtered to the service).
pub struct ServiceWatch {
    name: String,
    inner: WatchStream,
}

impl ServiceWatch {
    /// The next change; `Err` when the watch ended (resume with
    /// [`Client::watch_service`] from [`WatchEnd::resume_from`]).
    pub async fn next(&mut self) -> Option<Result<ServiceChange, WatchEnd>> {
        loop {
            let event = match self.inner.next().await? {
                Ok(e) => e,
                Err(end) => return Some(Err(end)),
            };
            let change = match event {
                WatchEvent::Put { key, value, .. } => match parse_key(&key) {
                    Some((_, name, _)) if name == self.name => {
                        ServiceInstance::decode(&value).map(ServiceChange::Up)
                    }
                    _ => None,
                },
                WatchEvent::Delete { key, ts } => match parse_key(&key) {
                    Some((region, name, id)) if name == self.name => {
                        Some(ServiceChange::Down { region, id, at: ts })
                    }
                    _ => None,
                },
                WatchEvent::Progress { .. } => None,
            };
            if let Some(c) = change {
                return Some(Ok(c));
            }
        }
    }

    /// Where to resume this watch from.
    pub fn resume_point(&self) -> Timestamp {
        self.inner.resume_point()
    }
}

impl Client {
    /// Registers `instance` in the connected node's region attached to
    /// `lease` (its `region` is set by the node). The region's registry
    /// prefix (`services/<region>/`) must be strong and homed there
    /// (`MER-1015` otherwise); a record over the limits is `MER-1007`.
    pub async fn register_instance(
        &self,
        instance: ServiceInstance,
        lease: u64,
    ) -> Result<(), ClientError> {
        let req = RequestV1::ServiceRegister {
            instance: instance.into(),
            lease,
        };
        self.write(&req).await.map(|_| ())
    }

    /// Registers `instance` under a new lease of `ttl` and keeps the lease
    /// alive in the background: the instance is listed while this process
    /// keeps it alive, and disappears within `ttl` of its last keepalive.
    pub async fn register_service(
        self: &Arc<Self>,
        instance: ServiceInstance,
        ttl: Duration,
    ) -> Result<ServiceRegistration, ClientError> {
        let lease = self.lease_grant(ttl).await?;
        if let Err(e) = self.register_instance(instance, lease.id).await {
            let _ = self.lease_revoke(lease.id).await;
            return Err(e);
        }
        Ok(ServiceRegistration {
            client: self.clone(),
            lease: lease.id,
            keeper: LeaseKeeper::start(self.clone(), &[lease]),
        })
    }

    /// Service `name`'s instances in every region, read at the connected
    /// node: its region's first (`zone`'s first within it), then the other
    /// regions' by the round trip that node measured to them.
    pub async fn lookup_service(
        &self,
        name: &str,
        zone: &str,
    ) -> Result<Vec<ServiceInstance>, ClientError> {
        let req = RequestV1::ServiceLookup {
            name: name.to_string(),
            zone: zone.to_string(),
        };
        match self.call(&req).await? {
            (_, ResponseBodyV1::Services(list)) => Ok(list
                .into_iter()
                .map(|i: ServiceInstanceV1| i.into())
                .collect()),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Watches service `name`'s instances in every region from `from`
    /// (`None`: from now).
    pub async fn watch_service(
        &self,
        name: &str,
        from: Option<Timestamp>,
    ) -> Result<ServiceWatch, ClientError> {
        let inner = self
            .watch(SERVICE_PREFIX, WatchOptions { prefix: true, from })
            .await?;
        Ok(ServiceWatch {
            name: name.to_string(),
            inner,
        })
    }
}
