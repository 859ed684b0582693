//! The policy handoff's fences (docs/consistency.md P3): how a policy
//! change that needs one ([`Transition::Handoff`]) stops every source
//! region's writes to the prefix and waits until the new home holds them.
//!
//! The control range's leader drives it ([`super::control`]):
//!
//! 1. It commits the table with the prefix *in a handoff* (version `v`):
//!    a node that applied it takes no write and no linearizable read of
//!    the prefix (`MER-3003`, retry).
//! 2. It asks the leader of every range overlapping the prefix, in every
//!    region, to fence it ([`fence_everywhere`]): the leader
//!    proposes `CommandV1::PolicyFence { table: v }`, after which the
//!    range refuses every client write decided under a table older than
//!    `v` (a node that has not applied step 1 yet), and waits until the new
//!    home's cursor for its region passed the fence
//!    ([`Engine::fence_for_handoff`]).
//! 3. It commits the table with the new policy (version `> v`).
//!
//! **Invariant:** once step 3 commits, every write any region
//! acknowledged to the prefix is applied at the new home. Every such write
//! was decided under a table older than `v` (step 1 refuses them after),
//! so it applied before the fence in its region's range log, at a version
//! below the fence's (versions rise along the log), and the new home's
//! cursor for that region passed the fence before step 3. Every region is
//! fenced, not only the old home: streams carry each region's own writes
//! straight to each other region, so an earlier home's writes reach the
//! new home on that region's stream, not through the old home. A write decided under
//! an older table that reaches the log after the fence is refused with
//! nothing written. A node whose table is older than a range's fence
//! serves no linearizable read there ([`Engine`]'s leader reads): the new
//! home may already be taking writes.
//!
//! A handoff that does not finish (a source region unreachable) leaves the
//! prefix in its handoff, taking no writes: repeating the same change
//! resumes it; a change that needs no handoff (back to the old policy)
//! cancels it. Fences only ever refuse writes decided under older tables,
//! so a cancelled or repeated handoff is safe.
//!
//! [`Transition::Handoff`]: crate::replication::policy::Transition::Handoff

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::Engine;
use crate::error_code::{ApiError, ErrorCode};
use crate::peer::{PeerRequestV1, PeerResponseV1};
use crate::raft::network::PeerRouter;
use crate::raft::types::CommandV1;
use crate::raft::RangeDescriptor;
use crate::types::{prefix_end, Timestamp};

/// Longest a fenced range's leader waits for the new home's cursor to pass
/// the fence (a WAN round trip and a stream's pacing and close interval;
/// seconds are a region that cannot be reached).
pub const FENCE_WAIT: Duration = Duration::from_secs(8);
/// Longest one fence exchange may take, redirects included.
const FENCE_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most redirects followed to a range's leader in a source region.
const MAX_REDIRECTS: usize = 4;

fn unavailable(msg: String) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, msg)
}

impl Engine {
    /// Fences range `range` here for a handoff under policy table `table`
    /// (this node must lead it: `NotLeader` otherwise), then waits, at most
    /// [`FENCE_WAIT`], until region `wait_for` (the new home, unless it is
    /// this region) acknowledged a cursor for this region at or past the
    /// fence. Returns the fence's version. Idempotent: a repeated fence
    /// keeps the highest table.
    pub async fn fence_for_handoff(
        &self,
        range: u64,
        table: u64,
        wait_for: Option<&str>,
    ) -> Result<Timestamp, ApiError> {
        let Some(desc) = self.region.ranges().iter().find(|r| r.id == range).cloned() else {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("no range {range} in this region"),
            ));
        };
        let wait_for = wait_for.filter(|r| *r != self.regions.local);
        if let Some(r) = wait_for {
            if !self.regions.all.iter().any(|known| known == r) {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("unknown region {r:?} to wait for"),
                ));
            }
        }
        if !self.region.leads(&desc) {
            return Err(self.region.not_leading(&desc));
        }
        let now = self.hlc.now().map_err(super::clock_error)?;
        let reply = self
            .region
            .propose_reply(&desc, now, CommandV1::PolicyFence { table })
            .await?;
        let at = Timestamp(reply.version);
        if let Some(region) = wait_for {
            self.region
                .acked_cursors()
                .wait_region(range, region, at, FENCE_WAIT)
                .await
                .map_err(|had| {
                    unavailable(format!(
                        "range {range} is fenced at {at} but {region} has applied this region's writes only up to {had} after {FENCE_WAIT:?}"
                    ))
                })?;
        }
        Ok(at)
    }
}

/// The ranges of `ranges` holding keys under `prefix` (`None`: the
/// default policy, whose keys may lie in any range).
pub fn ranges_under<'a>(
    ranges: &'a [RangeDescriptor],
    prefix: Option<&[u8]>,
) -> Vec<&'a RangeDescriptor> {
    let Some(p) = prefix else {
        return ranges.iter().collect();
    };
    let end = prefix_end(p);
    ranges
        .iter()
        .filter(|r| {
            let starts_before_end = end.as_deref().is_none_or(|e| r.start.as_slice() < e);
            let ends_after_start = r.end.as_deref().is_none_or(|e| e > p);
            starts_before_end && ends_after_start
        })
        .collect()
}

/// Fences every range of `ranges` in every region of `sources` under
/// policy table `table`, each waiting until `home` applied that region's
/// writes up to its fence (step 2 of the module's protocol), all at once.
/// `nodes` are the peer addresses of each region's nodes.
pub async fn fence_everywhere(
    router: &PeerRouter,
    nodes: &BTreeMap<String, Vec<SocketAddr>>,
    ranges: &[&RangeDescriptor],
    sources: &[String],
    home: &str,
    table: u64,
) -> Result<(), ApiError> {
    let fences = sources.iter().flat_map(|region| {
        ranges.iter().map(move |r| async move {
            let addrs = nodes.get(region).map(Vec::as_slice).unwrap_or_default();
            let wait_for = (region != home).then(|| home.to_string());
            let req = PeerRequestV1::PolicyFence {
                range: r.id,
                table,
                wait_for,
            };
            tokio::time::timeout(FENCE_EXCHANGE_TIMEOUT, fence_one(router, addrs, &req))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {FENCE_EXCHANGE_TIMEOUT:?}")))
                .map_err(|why| format!("range {} in {region}: {why}", r.id))
        })
    });
    let failed: Vec<String> = futures_util::future::join_all(fences)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(unavailable(format!(
        "the handoff is not complete: {}; the policy stays in its handoff (no writes, no linearizable reads) until the same change is repeated (it resumes) or a change back cancels it",
        failed.join("; ")
    )))
}

/// One fence at the leader of its range in a region whose nodes are
/// `addrs`: tried at each node in turn, following leader redirects.
async fn fence_one(
    router: &PeerRouter,
    addrs: &[SocketAddr],
    req: &PeerRequestV1,
) -> Result<Timestamp, String> {
    if addrs.is_empty() {
        return Err("no node of the region is known".into());
    }
    let mut last = String::new();
    let mut next: Option<SocketAddr> = None;
    // Every node of the region in turn, each of its redirects followed
    // (at most MAX_REDIRECTS in all).
    let mut nodes = addrs.iter();
    let mut redirects = 0;
    loop {
        let addr = match next.take() {
            Some(a) if redirects < MAX_REDIRECTS => {
                redirects += 1;
                a
            }
            _ => match nodes.next() {
                Some(a) => *a,
                None => break,
            },
        };
        match router
            .exchange(addr, req, crate::peer::PEER_MAX_FRAME_BYTES)
            .await
        {
            Ok(PeerResponseV1::PolicyFenced { at }) => return Ok(Timestamp(at)),
            Ok(PeerResponseV1::NotLeader { leader }) => {
                next = leader.and_then(|l| l.parse().ok());
                last = format!("{addr} does not lead the range");
            }
            Ok(PeerResponseV1::Err { code, message }) => {
                // A refusal at the leader (the wait timed out): final.
                return Err(format!("{addr}: {code} {message}"));
            }
            Ok(other) => return Err(format!("{addr}: unexpected reply {other:?}")),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(format!("no leader answered ({last})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: u64, start: &[u8], end: Option<&[u8]>) -> RangeDescriptor {
        RangeDescriptor {
            id,
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn a_prefix_is_fenced_in_exactly_the_ranges_holding_its_keys() {
        let ranges = [
            r(1, b"", Some(b"g")),
            r(2, b"g", Some(b"p")),
            r(3, b"p", None),
        ];
        let ids = |p: Option<&[u8]>| -> Vec<u64> {
            ranges_under(&ranges, p).iter().map(|r| r.id).collect()
        };
        assert_eq!(ids(Some(b"a/")), vec![1]);
        assert_eq!(ids(Some(b"g")), vec![2], "a prefix equal to a range start");
        assert_eq!(ids(Some(b"f")), vec![1], "keys f.. end before g");
        assert_eq!(ids(Some(b"z")), vec![3]);
        assert_eq!(ids(None), vec![1, 2, 3], "the default's keys are anywhere");
        let wide = [r(1, b"", Some(b"ab")), r(2, b"ab", None)];
        let ids: Vec<u64> = ranges_under(&wide, Some(b"a"))
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![1, 2], "a prefix spanning two ranges");
        let ids: Vec<u64> = ranges_under(&[r(1, b"", None)], Some(b"\xff"))
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![1], "a prefix without an end");
    }
}
