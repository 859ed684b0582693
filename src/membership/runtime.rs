//! The owner task that drives a [`GossipCore`]: it alone touches the core,
//! fed by two bounded channels (commands from handles, datagrams from the
//! reader task) and its own timer deadline, and it alone sends. The socket
//! sits behind [`PacketIo`] so tests wrap it with loss and delay.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::machine::GossipCore;
use super::stats::GossipStats;
use super::view::{MembershipEvent, Snapshot};

/// Commands queued from handles to the owner task.
pub const COMMAND_QUEUE_CAPACITY: usize = 256;
/// Datagrams queued from the reader to the owner task; beyond it the reader
/// drops (UDP semantics) and counts `overload`.
pub const DATAGRAM_QUEUE_CAPACITY: usize = 1_024;
/// Datagrams the owner handles in one turn before checking timers again.
pub const MAX_DATAGRAMS_PER_TURN: usize = 64;
/// Events buffered per subscriber before it lags.
pub const EVENT_CHANNEL_CAPACITY: usize = 1_024;
/// Pause after a failed `recv_from`, so a broken socket cannot spin a core.
pub const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// A datagram socket. The production one is [`UdpIo`]; tests wrap it (see
/// [`super::FaultyIo`]).
pub trait PacketIo: Send + Sync + 'static {
    /// Sends one datagram (best effort, like UDP).
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// Receives one datagram into `buf`: its length and sender. A datagram
    /// longer than `buf` is truncated to `buf.len()`.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A tokio UDP socket.
#[derive(Debug)]
pub struct UdpIo {
    socket: tokio::net::UdpSocket,
}

impl UdpIo {
    /// Binds a UDP socket at `addr`.
    pub async fn bind(addr: SocketAddr) -> io::Result<UdpIo> {
        Ok(UdpIo {
            socket: tokio::net::UdpSocket::bind(addr).await?,
        })
    }
}

impl PacketIo for UdpIo {
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<()> {
        self.socket.send_to(buf, target).await.map(|_| ())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// What a handle asks the owner task to do.
pub(crate) enum Command {
    PublishLeaderHint {
        range: u64,
        leader: String,
        term: u64,
    },
    /// Stop; with `leave`, tell peers first. `done` fires once the socket
    /// is closed.
    Stop {
        leave: bool,
        done: oneshot::Sender<()>,
    },
}

/// The owner task's outputs.
pub(crate) struct Outputs {
    pub(crate) view: watch::Sender<Snapshot>,
    pub(crate) events: broadcast::Sender<MembershipEvent>,
}

/// Spawns the reader and the owner task.
pub(crate) fn spawn<I: PacketIo>(
    core: GossipCore,
    io: Arc<I>,
    commands: mpsc::Receiver<Command>,
    outputs: Outputs,
    stats: Arc<GossipStats>,
    max_packet_bytes: usize,
) {
    let (data_tx, data_rx) = mpsc::channel(DATAGRAM_QUEUE_CAPACITY);
    let reader = tokio::spawn(read_loop(
        io.clone(),
        data_tx,
        max_packet_bytes,
        stats.clone(),
    ));
    let span = tracing::info_span!(
        "membership",
        node = %core.identity().node_id,
        region = %core.identity().region
    );
    let owner = Owner {
        core,
        io,
        outputs,
        stats,
    };
    tokio::spawn(tracing::Instrument::instrument(
        owner.run(commands, data_rx, reader),
        span,
    ));
}

async fn read_loop<I: PacketIo>(
    io: Arc<I>,
    tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    max_packet_bytes: usize,
    stats: Arc<GossipStats>,
) {
    // One byte more than the limit, so an oversized datagram is detected
    // rather than silently truncated into something that might parse.
    let mut buf = vec![0u8; max_packet_bytes + 1];
    loop {
        match io.recv_from(&mut buf).await {
            Ok((len, from)) if len > max_packet_bytes => {
                stats.received();
                stats.dropped("oversize");
                tracing::debug!(%from, len, "dropped oversized gossip datagram");
            }
            Ok((len, from)) => match tx.try_send((from, buf[..len].to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    stats.received();
                    stats.dropped("overload");
                }
                Err(TrySendError::Closed(_)) => return,
            },
            Err(e) => {
                tracing::debug!(error = %e, "gossip recv_from failed");
                tokio::time::sleep(RECV_ERROR_BACKOFF).await;
            }
        }
    }
}

struct Owner<I> {
    core: GossipCore,
    io: Arc<I>,
    outputs: Outputs,
    stats: Arc<GossipStats>,
}

impl<I: PacketIo> Owner<I> {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut data: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        reader: JoinHandle<()>,
    ) {
        let mut done = None;
        loop {
            self.flush().await;
            let deadline = self.core.poll_timeout();
            let sleep = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Timers first: a flood of datagrams must not delay probes into
            // false suspicions.
            tokio::select! {
                biased;
                () = sleep => self.core.handle_timeout(Instant::now()),
                command = commands.recv() => match command {
                    // Every handle dropped: stop like a crash.
                    None => break,
                    Some(Command::Stop { leave, done: d }) => {
                        if leave {
                            self.core.leave(Instant::now());
                            self.flush().await;
                        }
                        done = Some(d);
                        break;
                    }
                    Some(Command::PublishLeaderHint { range, leader, term }) => {
                        self.core.publish_leader_hint(Instant::now(), range, leader, term);
                    }
                },
                Some((from, mut bytes)) = data.recv() => {
                    self.core.handle_datagram(Instant::now(), from, &mut bytes);
                    for _ in 1..MAX_DATAGRAMS_PER_TURN {
                        let Ok((from, mut bytes)) = data.try_recv() else { break };
                        self.core.handle_datagram(Instant::now(), from, &mut bytes);
                    }
                }
            }
        }
        reader.abort();
        let _ = reader.await;
        // The socket closes with the last reference; only delayed sends of a
        // test's faulty layer may still hold one briefly.
        drop(self.io);
        tracing::info!("membership stopped");
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            match self.io.send_to(&t.bytes, t.to).await {
                Ok(()) => self.stats.sent(),
                Err(e) => {
                    self.stats.dropped("send_error");
                    tracing::debug!(to = %t.to, error = %e, "gossip send failed");
                }
            }
        }
        while let Some(event) = self.core.poll_event() {
            log_event(&event);
            // Fails only when nobody subscribes; the snapshot has it anyway.
            let _ = self.outputs.events.send(event);
        }
        if let Some(snapshot) = self.core.poll_snapshot() {
            self.outputs.view.send_replace(snapshot);
        }
    }
}

fn log_event(event: &MembershipEvent) {
    match event {
        MembershipEvent::Joined(m) => {
            tracing::info!(member = %m.identity.node_id, region = %m.identity.region, generation = m.incarnation.generation, "member joined")
        }
        MembershipEvent::Suspected(m) => {
            tracing::info!(member = %m.identity.node_id, region = %m.identity.region, "member suspected")
        }
        MembershipEvent::Refuted(m) => {
            tracing::info!(member = %m.identity.node_id, region = %m.identity.region, "suspicion refuted")
        }
        MembershipEvent::Down(m) => {
            tracing::warn!(member = %m.identity.node_id, region = %m.identity.region, "member declared down")
        }
        MembershipEvent::Left(m) => {
            tracing::info!(member = %m.identity.node_id, region = %m.identity.region, "member left")
        }
        MembershipEvent::Rejoined(m) => {
            tracing::warn!(
                rejoin = m.incarnation.rejoin,
                "this node was declared down and rejoined"
            )
        }
    }
}
