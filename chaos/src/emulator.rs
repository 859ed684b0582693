//! Starting and stopping an emulator, and the library's control handle.
//!
//! [`Emulator::start`] checks the config, binds every socket (so a bad
//! address fails the start before anything runs), then spawns the engine,
//! one task per listener and the control API. All tasks live in one
//! `JoinSet` the [`Emulator`] owns (flow readers and TCP connections in
//! their listener's), so dropping the [`Emulator`] or calling
//! [`Emulator::shutdown`] stops everything.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::addr::SourceMap;
use crate::config::{Protocol, ResolvedListener, WanConfig, WanLimits};
use crate::controller::Controller;
use crate::core::Core;
use crate::engine::{queue_limits, Datagram, Engine};
use crate::error::StartError;
use crate::limits::{CONTROL_CHANNEL_CAPACITY, ENGINE_INPUT_CAPACITY, SHUTDOWN_TIMEOUT};
use crate::status::{ListenerStats, ListenerStatus, Shared, StreamStats};
use crate::table::LinkTable;
use crate::tcp::TcpProxy;
use crate::udp::{SplitSocket, UdpListener};

/// A running emulator. Dropping it stops every task (sockets close as the
/// tasks unwind); [`Emulator::shutdown`] also waits for that.
#[derive(Debug)]
pub struct Emulator {
    tasks: JoinSet<()>,
    control: Controller,
    listeners: HashMap<String, SocketAddr>,
    control_addr: Option<SocketAddr>,
}

enum Bound {
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpListener),
}

fn bind(l: &ResolvedListener) -> Result<(Bound, SocketAddr), StartError> {
    let err = |source| StartError::Bind {
        what: l.spec.name.clone(),
        addr: l.spec.listen,
        source,
    };
    let bound = match l.spec.protocol {
        Protocol::Udp => Bound::Udp(std::net::UdpSocket::bind(l.spec.listen).map_err(err)?),
        Protocol::Tcp => {
            let s = std::net::TcpListener::bind(l.spec.listen).map_err(err)?;
            s.set_nonblocking(true).map_err(err)?;
            Bound::Tcp(s)
        }
    };
    let addr = match &bound {
        Bound::Udp(s) => s.local_addr(),
        Bound::Tcp(s) => s.local_addr(),
    }
    .map_err(err)?;
    Ok((bound, addr))
}

/// What every listener task is handed.
struct Wiring {
    sources: Arc<SourceMap>,
    data_tx: mpsc::Sender<Datagram>,
    table_rx: watch::Receiver<Arc<LinkTable>>,
    shared: Arc<Shared>,
    upstream_bind_ip: IpAddr,
    limits: WanLimits,
    seed: u64,
}

impl Wiring {
    fn spawn(
        &self,
        tasks: &mut JoinSet<()>,
        index: usize,
        l: ResolvedListener,
        (socket, addr): (Bound, SocketAddr),
    ) -> Result<(), StartError> {
        let err = |source| StartError::Bind {
            what: l.spec.name.clone(),
            addr,
            source,
        };
        match socket {
            Bound::Udp(s) => {
                let front = SplitSocket::new(s).map_err(err)?;
                let task = UdpListener {
                    index,
                    listener: l,
                    front,
                    sources: self.sources.clone(),
                    upstream_bind_ip: self.upstream_bind_ip,
                    limits: self.limits,
                    data_tx: self.data_tx.clone(),
                    shared: self.shared.clone(),
                };
                tasks.spawn(task.run());
            }
            Bound::Tcp(s) => {
                let socket = tokio::net::TcpListener::from_std(s).map_err(err)?;
                let task = TcpProxy {
                    index,
                    listener: l,
                    socket,
                    sources: self.sources.clone(),
                    upstream_bind_ip: self.upstream_bind_ip,
                    max_connections: self.limits.max_connections_per_listener,
                    table_rx: self.table_rx.clone(),
                    shared: self.shared.clone(),
                    // Each connection derives its own from this.
                    seed: self
                        .seed
                        .wrapping_add((index as u64).wrapping_mul(1_000_003)),
                };
                tasks.spawn(task.run());
            }
        }
        Ok(())
    }
}

async fn bind_control(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, StartError> {
    let Some(addr) = addr else { return Ok(None) };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| StartError::Bind {
            what: "control".into(),
            addr,
            source,
        })
}

fn new_shared(
    table: &LinkTable,
    listeners: &[ResolvedListener],
    bound: &[(Bound, SocketAddr)],
) -> Arc<Shared> {
    Arc::new(Shared {
        input_overflow: AtomicU64::new(0),
        streams: (0..table.link_slots())
            .map(|_| StreamStats::default())
            .collect(),
        listeners: listeners
            .iter()
            .zip(bound)
            .map(|(l, (_, addr))| (listener_status(l, table, *addr), ListenerStats::default()))
            .collect(),
    })
}

impl Emulator {
    /// Checks `config`, binds every listener and the control API, and
    /// starts forwarding. Must run inside a tokio runtime (multi-threaded
    /// or not). On error nothing is left running.
    pub async fn start(config: WanConfig) -> Result<Emulator, StartError> {
        let resolved = config.resolve()?;
        // Everything is bound before anything runs, so a taken address
        // fails the start cleanly.
        let bound = resolved
            .listeners
            .iter()
            .map(bind)
            .collect::<Result<Vec<_>, _>>()?;
        let control_listener = bind_control(config.control_addr).await?;
        let table = resolved.table;
        let shared = new_shared(&table, &resolved.listeners, &bound);
        let seed = config.seed.unwrap_or_else(rand::random);
        tracing::info!(seed, listeners = bound.len(), "starting the WAN emulator");
        let (data_tx, data_rx) = mpsc::channel(ENGINE_INPUT_CAPACITY);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_CHANNEL_CAPACITY);
        let (table_tx, table_rx) = watch::channel(Arc::new(table.clone()));
        let wiring = Wiring {
            sources: Arc::new(resolved.sources),
            data_tx,
            table_rx,
            shared: shared.clone(),
            upstream_bind_ip: config.upstream_bind_ip,
            limits: config.limits,
            seed,
        };
        let mut tasks = JoinSet::new();
        let mut listeners = HashMap::new();
        for (index, (l, b)) in resolved.listeners.into_iter().zip(bound).enumerate() {
            listeners.insert(l.spec.name.clone(), b.1);
            // On error `tasks` drops here, aborting what was spawned.
            wiring.spawn(&mut tasks, index, l, b)?;
        }
        // Only listener tasks hold senders of the engine's input.
        drop(wiring);
        let engine = Engine {
            core: Core::seeded(table, queue_limits(&config.limits), seed),
            data_rx,
            control_rx,
            table_tx,
            shared,
        };
        tasks.spawn(engine.run());
        let control = Controller::new(control_tx);
        let mut control_addr = None;
        if let Some(listener) = control_listener {
            control_addr = listener.local_addr().ok();
            tasks.spawn(crate::control::serve(listener, control.clone()));
        }
        Ok(Emulator {
            tasks,
            control,
            listeners,
            control_addr,
        })
    }

    /// A handle for partitions, heal, link changes and status.
    pub fn controller(&self) -> Controller {
        self.control.clone()
    }

    /// The bound address of the listener called `name` (useful when the
    /// config asked for port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied()
    }

    /// The control API's bound address, if it runs.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// Stops every task and waits (at most
    /// [`crate::limits::SHUTDOWN_TIMEOUT`]) until they are gone and their
    /// sockets closed.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, drain).await.is_err() {
            tracing::warn!("WAN emulator tasks still running after the shutdown timeout");
        }
    }
}

fn listener_status(l: &ResolvedListener, table: &LinkTable, listen: SocketAddr) -> ListenerStatus {
    ListenerStatus {
        name: l.spec.name.clone(),
        protocol: l.spec.protocol,
        listen,
        upstream: l.spec.upstream,
        region: table.name(Some(l.region)).to_string(),
        source_region: l.spec.source_region.clone(),
        open: 0,
        opened: 0,
        refused: 0,
    }
}
