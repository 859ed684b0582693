//! The TCP proxy of one front address: per connection, two pumps (client →
//! node, node → client), each delaying chunks by its link's one-way delay
//! while keeping byte order.
//!
//! - **Latency** applies per chunk read ([`TCP_CHUNK_BYTES`] at most), with
//!   jitter; [`InOrder`] keeps a chunk from overtaking the one ahead.
//! - **Loss** does not apply: TCP would retransmit, and emulating that is
//!   the kernel's job, not ours. Only datagrams are lost.
//! - **A partition stalls** rather than resets: chunks that come due while
//!   their link is cut wait until it heals and then cross after a one-way
//!   delay, like a retransmission, and a connection accepted during a
//!   partition is connected upstream only after it heals. This is what a
//!   real partition does to TCP (nothing arrives, nothing is refused), so
//!   the software under test meets its own timeouts, not a convenient RST.
//! - **Bounds**: a pump holds at most [`TCP_QUEUE_CHUNKS`] chunks; beyond
//!   that it stops reading and TCP flow control pushes back on the sender.
//!   Connections per listener are bounded; one beyond is closed at once.
//! - **Not emulated**: the client's handshake completes locally (the
//!   kernel accepts for the proxy), so a new connection's first exchange
//!   costs one RTT instead of two.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::addr::SourceMap;
use crate::config::{Classify, ResolvedListener};
use crate::limits::{TCP_CHUNK_BYTES, TCP_CONNECT_TIMEOUT, TCP_QUEUE_CHUNKS};
use crate::link::InOrder;
use crate::status::{Shared, StreamStats};
use crate::table::{LinkId, LinkTable};

pub(crate) struct TcpProxy {
    pub(crate) index: usize,
    pub(crate) listener: ResolvedListener,
    pub(crate) socket: TcpListener,
    pub(crate) sources: Arc<SourceMap>,
    pub(crate) upstream_bind_ip: IpAddr,
    pub(crate) max_connections: usize,
    pub(crate) table_rx: watch::Receiver<Arc<LinkTable>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) seed: u64,
}

/// One chunk of a byte stream; `None` is the end of the stream (a FIN).
struct Chunk {
    at: Instant,
    bytes: Option<Vec<u8>>,
}

impl TcpProxy {
    pub(crate) async fn run(self) {
        let mut conns = JoinSet::new();
        let mut number = 0u64;
        loop {
            tokio::select! {
                r = self.socket.accept() => match r {
                    Ok((stream, client)) => {
                        if conns.len() >= self.max_connections {
                            self.count(|s| &s.refused, 1);
                            tracing::debug!(listener = %self.listener.spec.name, %client, "connection refused: limit");
                            continue;
                        }
                        number += 1;
                        conns.spawn(self.connection(stream, client, number));
                        self.count(|s| &s.opened, 1);
                    }
                    Err(e) => {
                        // Out of file descriptors, typically: wait a little.
                        tracing::warn!(listener = %self.listener.spec.name, error = %e, "accept");
                        tokio::time::sleep(crate::limits::ACCEPT_ERROR_BACKOFF).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
            if let Some((_, s)) = self.shared.listeners.get(self.index) {
                s.open.store(conns.len() as u64, Ordering::Relaxed);
            }
        }
    }

    fn count(
        &self,
        field: impl Fn(&crate::status::ListenerStats) -> &std::sync::atomic::AtomicU64,
        n: u64,
    ) {
        if let Some((_, s)) = self.shared.listeners.get(self.index) {
            field(s).fetch_add(n, Ordering::Relaxed);
        }
    }

    fn connection(
        &self,
        client: TcpStream,
        client_addr: SocketAddr,
        number: u64,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let from = match self.listener.classify {
            Classify::ByAddress => self.sources.classify(client_addr.ip()),
            Classify::Fixed(r) => Some(r),
        };
        let conn = Connection {
            link: LinkId {
                from,
                to: Some(self.listener.region),
            },
            upstream: self.listener.spec.upstream,
            bind_ip: self.upstream_bind_ip,
            table_rx: self.table_rx.clone(),
            shared: self.shared.clone(),
            seed: self.seed.wrapping_add(number.wrapping_mul(2)),
        };
        let name = self.listener.spec.name.clone();
        async move {
            if let Err(e) = conn.run(client).await {
                tracing::debug!(listener = %name, client = %client_addr, error = %e, "connection ended");
            }
        }
    }
}

struct Connection {
    link: LinkId,
    upstream: SocketAddr,
    bind_ip: IpAddr,
    table_rx: watch::Receiver<Arc<LinkTable>>,
    shared: Arc<Shared>,
    seed: u64,
}

impl Connection {
    fn stats(&self, link: LinkId) -> Option<&StreamStats> {
        let slot = self.table_rx.borrow().link_slot(link);
        self.shared.streams.get(slot)
    }

    async fn run(mut self, client: TcpStream) -> io::Result<()> {
        // A handshake needs both directions.
        let (link, back) = (self.link, self.link.reverse());
        while wait_uncut(&mut self.table_rx, link).await?
            || wait_uncut(&mut self.table_rx, back).await?
        {}
        let upstream =
            tokio::time::timeout(TCP_CONNECT_TIMEOUT, connect(self.bind_ip, self.upstream))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out")
                })??;
        if let Some(s) = self.stats(link) {
            s.connections.fetch_add(1, Ordering::Relaxed);
        }
        // Delays are ours to add; Nagle's would come on top.
        client.set_nodelay(true)?;
        upstream.set_nodelay(true)?;
        let (cr, cw) = client.into_split();
        let (ur, uw) = upstream.into_split();
        let there = Pump {
            link,
            table_rx: self.table_rx.clone(),
            shared: self.shared.clone(),
            rng: StdRng::seed_from_u64(self.seed),
        };
        let back_pump = Pump {
            link: back,
            table_rx: self.table_rx.clone(),
            shared: self.shared.clone(),
            rng: StdRng::seed_from_u64(self.seed.wrapping_add(1)),
        };
        tokio::try_join!(there.run(cr, uw), back_pump.run(ur, cw))?;
        Ok(())
    }
}

async fn connect(bind_ip: IpAddr, upstream: SocketAddr) -> io::Result<TcpStream> {
    let socket = if upstream.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if bind_ip.is_ipv4() == upstream.is_ipv4() {
        socket.bind(SocketAddr::new(bind_ip, 0))?;
    }
    socket.connect(upstream).await
}

/// Waits while `link` is cut; true if it waited (the caller re-checks
/// whatever else it needs). Errors when the emulator has stopped.
async fn wait_uncut(rx: &mut watch::Receiver<Arc<LinkTable>>, link: LinkId) -> io::Result<bool> {
    let mut waited = false;
    while rx.borrow_and_update().is_cut(link) {
        waited = true;
        rx.changed()
            .await
            .map_err(|_| io::Error::other("the emulator stopped"))?;
    }
    Ok(waited)
}

/// One direction of a connection.
struct Pump {
    link: LinkId,
    table_rx: watch::Receiver<Arc<LinkTable>>,
    shared: Arc<Shared>,
    rng: StdRng,
}

impl Pump {
    async fn run(self, mut from: OwnedReadHalf, mut to: OwnedWriteHalf) -> io::Result<()> {
        let Pump {
            link,
            mut table_rx,
            shared,
            mut rng,
        } = self;
        let slot = table_rx.borrow().link_slot(link);
        let stats = shared.streams.get(slot);
        let (tx, mut rx) = mpsc::channel::<Chunk>(TCP_QUEUE_CHUNKS);
        let reading_table = table_rx.clone();
        let read = async move {
            let mut order = InOrder::default();
            let mut buf = vec![0u8; TCP_CHUNK_BYTES];
            loop {
                let n = from.read(&mut buf).await?;
                let delay = reading_table.borrow().params(link).sample_delay(&mut rng);
                let at = order.stamp(Instant::now(), delay);
                let bytes = (n > 0).then(|| buf.get(..n).unwrap_or_default().to_vec());
                // The writer is gone only when it failed; its error wins.
                if tx.send(Chunk { at, bytes }).await.is_err() || n == 0 {
                    return Ok::<(), io::Error>(());
                }
            }
        };
        let write = async move {
            while let Some(chunk) = rx.recv().await {
                tokio::time::sleep_until(chunk.at.into()).await;
                if wait_uncut(&mut table_rx, link).await? {
                    if let Some(s) = stats {
                        s.stalled_chunks.fetch_add(1, Ordering::Relaxed);
                    }
                    // Healed: the held bytes cross now, like a retransmission.
                    let one_way = table_rx.borrow().params(link).one_way();
                    tokio::time::sleep(one_way).await;
                }
                let Some(bytes) = chunk.bytes else {
                    to.shutdown().await?;
                    return Ok(());
                };
                to.write_all(&bytes).await?;
                if let Some(s) = stats {
                    s.bytes_forwarded
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
            }
            Ok(())
        };
        tokio::try_join!(read, write)?;
        Ok(())
    }
}
