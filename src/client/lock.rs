//! Locks, elections and fenced writes in the SDK.
//!
//! A lock is held by a lease (grant one and keep it alive with a
//! [`super::LeaseKeeper`]); every grant comes with a fencing token. Meridian
//! never promises bare mutual exclusion: a holder that stalls past its
//! lease loses the lock, and its writes guarded by the old token
//! ([`Client::put_fenced`], [`Client::txn_fenced`]) are refused once a
//! newer token has been handed out. An election is a lock whose holder
//! carries a value: [`Client::campaign`], [`Client::leader`],
//! [`Client::resign`].

use std::time::Duration;

use super::{Client, ClientError, TxnResponse};
use crate::error_code::{ApiError, ErrorCode};
use crate::types::{Timestamp, Txn};
use crate::wire::{FencedWriteV1, LockV1, RequestV1, ResponseBodyV1};

/// A lock's holder (an election's leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's lease.
    pub lease: u64,
    /// Its fencing token (its term, for an election).
    pub token: u64,
    /// Its value (the leader's, for an election).
    pub value: Vec<u8>,
}

impl From<LockV1> for LockHolder {
    fn from(l: LockV1) -> LockHolder {
        LockHolder {
            lease: l.lease,
            token: l.token,
            value: l.value,
        }
    }
}

impl Client {
    async fn lock_request(&self, req: &RequestV1) -> Result<Option<LockV1>, ClientError> {
        match self.call(req).await? {
            (_, ResponseBodyV1::Lock(l)) => Ok(l),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Acquires lock `name` for `lease` and returns the fencing token.
    /// With `wait: None` it fails at once (`MER-1016`) when the lock is
    /// held; with `Some(d)` it waits in arrival order for at most `d`, then
    /// leaves the queue and fails with `MER-1016`.
    pub async fn lock_acquire(
        &self,
        name: impl AsRef<[u8]>,
        lease: u64,
        wait: Option<Duration>,
    ) -> Result<u64, ClientError> {
        self.acquire_with_value(name.as_ref(), lease, Vec::new(), wait)
            .await
    }

    async fn acquire_with_value(
        &self,
        name: &[u8],
        lease: u64,
        value: Vec<u8>,
        wait: Option<Duration>,
    ) -> Result<u64, ClientError> {
        let until = wait.map(|d| tokio::time::Instant::now() + d);
        let req = RequestV1::LockAcquire {
            name: name.to_vec(),
            lease,
            value,
            wait: wait.is_some(),
        };
        loop {
            match self.lock_request(&req).await? {
                Some(l) if l.granted => return Ok(l.token),
                Some(_) => {}
                None => {
                    return Err(ClientError::Protocol(
                        "lock acquire answered nothing".into(),
                    ))
                }
            }
            // Queued: ask again (keeping the place) until the wait ends.
            if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
                // Leave the queue; if the grant came meanwhile, give it back.
                let cancel = RequestV1::LockCancel {
                    name: name.to_vec(),
                    lease,
                };
                self.lock_request(&cancel).await?;
                return Err(ApiError::new(
                    ErrorCode::LockBusy,
                    format!(
                        "lock {:?} was not granted within {:?}",
                        String::from_utf8_lossy(name),
                        wait.unwrap_or_default()
                    ),
                )
                .into());
            }
        }
    }

    /// Releases the grant of `token` on lock `name` (the next waiter gets
    /// it). `MER-1017` when `token` is not the current grant.
    pub async fn lock_release(
        &self,
        name: impl AsRef<[u8]>,
        token: u64,
    ) -> Result<(), ClientError> {
        let req = RequestV1::LockRelease {
            name: name.as_ref().to_vec(),
            token,
        };
        self.lock_request(&req).await.map(|_| ())
    }

    /// Lock `name`'s holder (linearizable), `None` when free.
    pub async fn lock_holder(
        &self,
        name: impl AsRef<[u8]>,
    ) -> Result<Option<LockHolder>, ClientError> {
        let req = RequestV1::LockHolder {
            name: name.as_ref().to_vec(),
        };
        Ok(self.lock_request(&req).await?.map(LockHolder::from))
    }

    /// Campaigns in election `name` with `value`, for `lease`: waits at
    /// most `wait` (in arrival order behind earlier candidates) until
    /// elected and returns the term's fencing token; `MER-1016` when the
    /// wait ends first (the candidacy is withdrawn).
    pub async fn campaign(
        &self,
        name: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: u64,
        wait: Duration,
    ) -> Result<u64, ClientError> {
        self.acquire_with_value(name.as_ref(), lease, value.as_ref().to_vec(), Some(wait))
            .await
    }

    /// Election `name`'s leader (`None`: no leader).
    pub async fn leader(&self, name: impl AsRef<[u8]>) -> Result<Option<LockHolder>, ClientError> {
        self.lock_holder(name).await
    }

    /// Resigns the leadership term `token` of election `name`.
    pub async fn resign(&self, name: impl AsRef<[u8]>, token: u64) -> Result<(), ClientError> {
        self.lock_release(name, token).await
    }

    async fn fenced(
        &self,
        name: &[u8],
        token: u64,
        write: FencedWriteV1,
    ) -> Result<TxnResponse, ClientError> {
        let req = RequestV1::Fenced {
            name: name.to_vec(),
            token,
            write,
        };
        match self.call(&req).await? {
            (_, ResponseBodyV1::Txn { succeeded, version }) => Ok(TxnResponse {
                succeeded,
                version: Timestamp(version),
            }),
            (_, other) => Err(Self::unexpected(other)),
        }
    }

    /// Writes `value` at `key` only if `token` is the newest fencing token
    /// granted for lock `name`; `MER-1017` otherwise, nothing written.
    pub async fn put_fenced(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        name: impl AsRef<[u8]>,
        token: u64,
    ) -> Result<TxnResponse, ClientError> {
        let write = FencedWriteV1::Put {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        };
        self.fenced(name.as_ref(), token, write).await
    }

    /// Deletes `key` only under the newest token of lock `name`.
    pub async fn delete_fenced(
        &self,
        key: impl AsRef<[u8]>,
        name: impl AsRef<[u8]>,
        token: u64,
    ) -> Result<TxnResponse, ClientError> {
        let write = FencedWriteV1::Delete {
            key: key.as_ref().to_vec(),
        };
        self.fenced(name.as_ref(), token, write).await
    }

    /// Runs `txn` only under the newest token of lock `name` (its guards
    /// then decide the branch as usual).
    pub async fn txn_fenced(
        &self,
        txn: &Txn,
        name: impl AsRef<[u8]>,
        token: u64,
    ) -> Result<TxnResponse, ClientError> {
        let write = FencedWriteV1::Txn(crate::wire::TxnV1::from(txn));
        self.fenced(name.as_ref(), token, write).await
    }
}
