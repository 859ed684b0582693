//! The UDP proxy of one front address.
//!
//! The listener task owns the front socket and its [`FlowTable`]. A
//! datagram from a client address it has not seen opens a flow: a new
//! upstream socket (bound to the configured upstream IP, any port) connected
//! to the real node, and a task reading that socket for the node's replies.
//! Datagrams both ways go to the engine, tagged with their link (client
//! region → node region, and back), which delays, drops or sends them;
//! replies leave from the front socket, so the client sees them come from
//! the address it sent to (QUIC and foca both check that).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::{AbortHandle, JoinSet};

use crate::addr::SourceMap;
use crate::config::{Classify, ResolvedListener, WanLimits};
use crate::engine::{Datagram, Out};
use crate::flows::FlowTable;
use crate::limits::{FLOW_SWEEP_INTERVAL, IO_ERROR_BACKOFF, MAX_DATAGRAM_BYTES};
use crate::status::Shared;
use crate::table::LinkId;

/// A socket as two handles on one file: a tokio one the receiving task
/// polls, and a non-blocking `std` one the engine sends from without
/// waiting for readiness.
pub(crate) struct SplitSocket {
    pub(crate) recv: UdpSocket,
    pub(crate) send: Arc<std::net::UdpSocket>,
}

impl SplitSocket {
    /// Wraps a bound socket; needs a tokio runtime.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<SplitSocket> {
        socket.set_nonblocking(true)?;
        let send = Arc::new(socket.try_clone()?);
        Ok(SplitSocket {
            recv: UdpSocket::from_std(socket)?,
            send,
        })
    }
}

struct Flow {
    link: LinkId,
    send: Arc<std::net::UdpSocket>,
    /// Milliseconds since the listener's `epoch` plus one when the node
    /// last replied; 0 before any reply.
    reply_seen: Arc<AtomicU64>,
    reader: AbortHandle,
}

pub(crate) struct UdpListener {
    pub(crate) index: usize,
    pub(crate) listener: ResolvedListener,
    pub(crate) front: SplitSocket,
    pub(crate) sources: Arc<SourceMap>,
    pub(crate) upstream_bind_ip: IpAddr,
    pub(crate) limits: WanLimits,
    pub(crate) data_tx: mpsc::Sender<Datagram>,
    pub(crate) shared: Arc<Shared>,
}

impl UdpListener {
    pub(crate) async fn run(self) {
        let epoch = Instant::now();
        let mut flows = FlowTable::new(self.limits.max_flows_per_listener, self.limits.flow_idle);
        let mut readers = JoinSet::new();
        let mut sweep = tokio::time::interval(FLOW_SWEEP_INTERVAL);
        let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
        loop {
            tokio::select! {
                r = self.front.recv.recv_from(&mut buf) => match r {
                    Ok((n, client)) => {
                        let bytes = buf.get(..n).unwrap_or_default().to_vec();
                        if !self.on_datagram(&mut flows, &mut readers, epoch, client, bytes) {
                            return;
                        }
                    }
                    // ICMP errors surface here on some systems; the socket
                    // stays usable. Pause so a persistent error does not spin.
                    Err(e) => {
                        tracing::debug!(listener = %self.listener.spec.name, error = %e, "front recv");
                        tokio::time::sleep(IO_ERROR_BACKOFF).await;
                    }
                },
                _ = sweep.tick() => self.sweep(&mut flows, epoch),
                // Readers only end when aborted; reap them.
                Some(_) = readers.join_next(), if !readers.is_empty() => {}
            }
        }
    }

    fn stats(&self) -> Option<&crate::status::ListenerStats> {
        self.shared.listeners.get(self.index).map(|(_, s)| s)
    }

    /// Handles one datagram from a client; false when the engine is gone.
    fn on_datagram(
        &self,
        flows: &mut FlowTable<Flow>,
        readers: &mut JoinSet<()>,
        epoch: Instant,
        client: SocketAddr,
        bytes: Vec<u8>,
    ) -> bool {
        let now = Instant::now();
        if flows.get(client, now).is_none() {
            if !flows.has_room() {
                self.sweep(flows, epoch);
            }
            if !flows.has_room() {
                if let Some(s) = self.stats() {
                    s.refused.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(listener = %self.listener.spec.name, %client, "flow refused: table full");
                return true;
            }
            match self.open_flow(client, readers, epoch) {
                Ok(flow) => {
                    // Room was checked just above.
                    let _ = flows.insert(client, flow, now);
                    self.count_flows(flows.len(), true);
                }
                Err(e) => {
                    tracing::warn!(listener = %self.listener.spec.name, %client, error = %e, "cannot open an upstream socket");
                    return true;
                }
            }
        }
        let Some(flow) = flows.get(client, now) else {
            return true;
        };
        let d = Datagram {
            link: flow.link,
            out: Out::Connected(flow.send.clone()),
            bytes,
        };
        forward(&self.data_tx, &self.shared, d)
    }

    fn open_flow(
        &self,
        client: SocketAddr,
        readers: &mut JoinSet<()>,
        epoch: Instant,
    ) -> io::Result<Flow> {
        let from = match self.listener.classify {
            Classify::ByAddress => self.sources.classify(client.ip()),
            Classify::Fixed(r) => Some(r),
        };
        let link = LinkId {
            from,
            to: Some(self.listener.region),
        };
        let socket = std::net::UdpSocket::bind((self.upstream_bind_ip, 0))?;
        socket.connect(self.listener.spec.upstream)?;
        let upstream = SplitSocket::new(socket)?;
        let reply_seen = Arc::new(AtomicU64::new(0));
        let reader = FlowReader {
            socket: upstream.recv,
            link: link.reverse(),
            front: self.front.send.clone(),
            client,
            reply_seen: reply_seen.clone(),
            data_tx: self.data_tx.clone(),
            shared: self.shared.clone(),
        };
        let reader = readers.spawn(reader.run(epoch));
        tracing::debug!(listener = %self.listener.spec.name, %client, ?link, "flow opened");
        Ok(Flow {
            link,
            send: upstream.send,
            reply_seen,
            reader,
        })
    }

    fn sweep(&self, flows: &mut FlowTable<Flow>, epoch: Instant) {
        let expired = flows.expire(Instant::now(), |f| {
            match f.reply_seen.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(epoch + Duration::from_millis(ms - 1)),
            }
        });
        if expired.is_empty() {
            return;
        }
        for (client, flow) in &expired {
            flow.reader.abort();
            tracing::debug!(listener = %self.listener.spec.name, %client, "flow expired");
        }
        self.count_flows(flows.len(), false);
    }

    fn count_flows(&self, open: usize, opened: bool) {
        if let Some(s) = self.stats() {
            s.open.store(open as u64, Ordering::Relaxed);
            if opened {
                s.opened.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Hands a datagram to the engine without waiting; false when the engine
/// is gone. A full channel drops the datagram (counted).
fn forward(tx: &mpsc::Sender<Datagram>, shared: &Shared, d: Datagram) -> bool {
    match tx.try_send(d) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            shared.input_overflow.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

/// Reads one flow's upstream socket: the node's replies to one client.
struct FlowReader {
    socket: UdpSocket,
    link: LinkId,
    front: Arc<std::net::UdpSocket>,
    client: SocketAddr,
    reply_seen: Arc<AtomicU64>,
    data_tx: mpsc::Sender<Datagram>,
    shared: Arc<Shared>,
}

impl FlowReader {
    async fn run(self, epoch: Instant) {
        loop {
            if let Err(e) = self.socket.readable().await {
                tracing::debug!(client = %self.client, error = %e, "upstream socket");
                tokio::time::sleep(IO_ERROR_BACKOFF).await;
                continue;
            }
            // The receive buffer lives on the stack only for this call, not
            // in the task across awaits, so an idle flow costs no 64 KiB.
            let received = {
                let mut buf = [0u8; MAX_DATAGRAM_BYTES];
                self.socket
                    .try_recv(&mut buf)
                    .map(|n| buf.get(..n).unwrap_or_default().to_vec())
            };
            let bytes = match received {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // ECONNREFUSED when the node is down (ICMP port
                    // unreachable on a connected socket): keep the flow,
                    // the node may come back. Pause so a persistent error
                    // does not spin.
                    tracing::trace!(client = %self.client, error = %e, "upstream recv");
                    tokio::time::sleep(IO_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            self.reply_seen.store(ms + 1, Ordering::Relaxed);
            let d = Datagram {
                link: self.link,
                out: Out::To(self.front.clone(), self.client),
                bytes,
            };
            if !forward(&self.data_tx, &self.shared, d) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[tokio::test]
    async fn an_idle_flow_costs_no_receive_buffer() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let front = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let (data_tx, _rx) = mpsc::channel(1);
        let reader = FlowReader {
            socket,
            link: LinkId {
                from: None,
                to: None,
            },
            front,
            client: "127.0.0.1:9".parse().unwrap(),
            reply_seen: Arc::new(AtomicU64::new(0)),
            data_tx,
            shared: Arc::new(Shared {
                input_overflow: AtomicU64::new(0),
                streams: Vec::new(),
                listeners: Vec::new(),
            }),
        };
        let task = reader.run(Instant::now());
        // The 64 KiB buffer is on the stack during a receive, not in the task.
        assert!(
            std::mem::size_of_val(&task) < 4_096,
            "{}",
            std::mem::size_of_val(&task)
        );
    }
}
