//! The engine task: the one owner of the datagram [`Core`] and of the link
//! table's master copy. UDP listeners and flows hand it datagrams through a
//! bounded channel; it admits them, sleeps until the next is due and sends
//! it from the right socket. Control commands arrive on a channel of their
//! own (served first, so a flood of datagrams cannot delay a partition),
//! and every change to the table is published on a watch channel for the
//! TCP proxies.
//!
//! Sending never waits: sockets are non-blocking `std` sockets (clones of
//! the ones the receiving tasks poll), and a datagram the kernel will not
//! take is counted as a send error, as a router would drop it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{Core, QueueLimits, Verdict};
use crate::error::ControlError;
use crate::limits::ENGINE_BATCH;
use crate::link::LinkParams;
use crate::status::{LinkStatus, Shared, Status, StreamCounters};
use crate::table::{LinkId, LinkTable, Partition};

/// Where a due datagram goes.
#[derive(Debug)]
pub(crate) enum Out {
    /// A flow's upstream socket, connected to the real node.
    Connected(Arc<UdpSocket>),
    /// A front socket, back to the client address.
    To(Arc<UdpSocket>, SocketAddr),
}

/// A datagram handed to the engine.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) link: LinkId,
    pub(crate) out: Out,
    pub(crate) bytes: Vec<u8>,
}

/// A change to one link; `None` fields keep their current value.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkChange {
    /// New round trip, ms.
    pub rtt_ms: Option<u64>,
    /// New jitter, ms.
    pub jitter_ms: Option<u64>,
    /// New loss ratio.
    pub loss: Option<f64>,
}

impl From<LinkParams> for LinkChange {
    fn from(p: LinkParams) -> Self {
        LinkChange {
            rtt_ms: Some(p.rtt_ms),
            jitter_ms: Some(p.jitter_ms),
            loss: Some(p.loss),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// A control command for the engine.
#[derive(Debug)]
pub(crate) enum Command {
    Partition(Partition, Reply<()>),
    Heal(Reply<()>),
    Link(String, String, LinkChange, Reply<()>),
    Status(Reply<Status>),
}

pub(crate) struct Engine {
    pub(crate) core: Core<Datagram>,
    pub(crate) data_rx: mpsc::Receiver<Datagram>,
    pub(crate) control_rx: mpsc::Receiver<Command>,
    pub(crate) table_tx: watch::Sender<Arc<LinkTable>>,
    pub(crate) shared: Arc<Shared>,
}

/// Queue bounds of a link in the core.
pub(crate) fn queue_limits(l: &crate::config::WanLimits) -> QueueLimits {
    QueueLimits {
        max_packets: l.link_queue_packets,
        max_bytes: l.link_queue_bytes,
    }
}

impl Engine {
    pub(crate) async fn run(mut self) {
        // With no UDP listener every datagram sender is gone from the
        // start; the engine still serves commands (TCP reads its table).
        let mut data_open = true;
        loop {
            let deadline = self.core.poll_timeout();
            // Far enough to never fire; only polled when nothing is queued.
            let wake = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3_600));
            tokio::select! {
                biased;
                cmd = self.control_rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => return,
                },
                d = self.data_rx.recv(), if data_open => match d {
                    Some(d) => self.admit_batch(d),
                    None => data_open = false,
                },
                () = tokio::time::sleep_until(wake.into()), if deadline.is_some() => {}
            }
            self.flush(Instant::now());
        }
    }

    fn admit_batch(&mut self, first: Datagram) {
        let now = Instant::now();
        self.admit(now, first);
        for _ in 1..ENGINE_BATCH {
            match self.data_rx.try_recv() {
                Ok(d) => self.admit(now, d),
                Err(_) => break,
            }
        }
    }

    fn admit(&mut self, now: Instant, d: Datagram) {
        let len = d.bytes.len();
        let link = d.link;
        if let Verdict::Dropped(reason) = self.core.handle_datagram(now, link, len, d) {
            tracing::trace!(?link, ?reason, len, "datagram dropped");
        }
    }

    fn flush(&mut self, now: Instant) {
        while let Some(t) = self.core.poll_transmit(now) {
            let d = t.payload;
            let sent = match &d.out {
                Out::Connected(s) => s.send(&d.bytes),
                Out::To(s, to) => s.send_to(&d.bytes, to),
            };
            if let Err(e) = sent {
                tracing::debug!(link = ?t.link, error = %e, "datagram not sent");
                self.core.send_failed(t.link, t.len);
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        // A dropped reply receiver means the caller gave up; nothing to do.
        match cmd {
            Command::Partition(p, reply) => {
                let r = self.core.table_mut().partition(p.clone());
                if r.is_ok() {
                    tracing::info!(partition = %p, "partition on");
                    self.publish();
                }
                let _ = reply.send(r);
            }
            Command::Heal(reply) => {
                self.core.table_mut().heal();
                tracing::info!("partitions healed");
                self.publish();
                let _ = reply.send(Ok(()));
            }
            Command::Link(a, b, change, reply) => {
                let r = self.change_link(&a, &b, change);
                if r.is_ok() {
                    self.publish();
                }
                let _ = reply.send(r);
            }
            Command::Status(reply) => {
                let _ = reply.send(Ok(self.status()));
            }
        }
    }

    fn change_link(&mut self, a: &str, b: &str, c: LinkChange) -> Result<(), ControlError> {
        let table = self.core.table_mut();
        let link = LinkId {
            from: Some(table.region(a)?),
            to: Some(table.region(b)?),
        };
        let old = table.params(link);
        let new = LinkParams {
            rtt_ms: c.rtt_ms.unwrap_or(old.rtt_ms),
            jitter_ms: c.jitter_ms.unwrap_or(old.jitter_ms),
            loss: c.loss.unwrap_or(old.loss),
        };
        table.set_link(a, b, new)?;
        tracing::info!(a, b, ?new, "link changed");
        Ok(())
    }

    fn publish(&self) {
        // No receivers (no TCP listener) is fine.
        let _ = self.table_tx.send(Arc::new(self.core.table().clone()));
    }

    fn status(&self) -> Status {
        let table = self.core.table();
        let streams = |link: LinkId| {
            self.shared
                .streams
                .get(table.link_slot(link))
                .map(|s| s.snapshot())
                .unwrap_or_default()
        };
        let mut links = self.core.reported_links();
        // Unclassified TCP senders show up once they sent something.
        for r in table.ids() {
            for link in [
                LinkId {
                    from: None,
                    to: Some(r),
                },
                LinkId {
                    from: Some(r),
                    to: None,
                },
            ] {
                if !links.contains(&link) && streams(link) != StreamCounters::default() {
                    links.push(link);
                }
            }
        }
        let links = links
            .into_iter()
            .map(|link| {
                let (queued_packets, queued_bytes) = self.core.queue_use(link);
                LinkStatus {
                    from: table.name(link.from).to_string(),
                    to: table.name(link.to).to_string(),
                    params: table.params(link),
                    cut: table.is_cut(link),
                    queued_packets,
                    queued_bytes,
                    datagrams: self.core.counters(link),
                    streams: streams(link),
                }
            })
            .collect();
        let (queued_packets, queued_bytes) = self.core.queued();
        Status {
            regions: table.names().to_vec(),
            partitions: table.partitions().to_vec(),
            links,
            listeners: self.shared.listener_statuses(),
            queued_packets,
            queued_bytes,
            input_overflow: self.shared.input_overflow.load(Ordering::Relaxed),
        }
    }
}
