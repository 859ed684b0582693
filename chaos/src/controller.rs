//! The handle that changes and reads a running emulator ([`Controller`]):
//! what the library, the control API (`control`) and `meridian-wan` call.
//! It only sends commands to the engine task; the emulator creates it.

use tokio::sync::{mpsc, oneshot};

use crate::engine::{Command, LinkChange};
use crate::error::ControlError;
use crate::link::LinkParams;
use crate::status::Status;
use crate::table::Partition;

/// Changes and reads a running emulator: partitions, heal, link
/// parameters, status. Cheap to clone; every clone talks to the same
/// engine task. Calls fail with [`ControlError::Stopped`] once the
/// emulator has stopped.
#[derive(Clone, Debug)]
pub struct Controller {
    tx: mpsc::Sender<Command>,
}

impl Controller {
    /// A controller sending to the engine task through `tx`.
    pub(crate) fn new(tx: mpsc::Sender<Command>) -> Controller {
        Controller { tx }
    }
}

impl Controller {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> Command,
    ) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)?
    }

    /// Puts a partition in force (both directions for
    /// [`Partition::Cut`] and [`Partition::Isolate`]). Datagrams in flight
    /// on a cut link are dropped; TCP stalls. Adding one already in force
    /// changes nothing.
    pub async fn partition(&self, p: Partition) -> Result<(), ControlError> {
        self.call(|r| Command::Partition(p, r)).await
    }

    /// Cuts `a` and `b` apart, both directions.
    pub async fn cut(&self, a: &str, b: &str) -> Result<(), ControlError> {
        self.partition(Partition::Cut {
            a: a.into(),
            b: b.into(),
        })
        .await
    }

    /// Cuts `region` from every other region.
    pub async fn isolate(&self, region: &str) -> Result<(), ControlError> {
        self.partition(Partition::Isolate {
            region: region.into(),
        })
        .await
    }

    /// Removes every partition; stalled TCP resumes.
    pub async fn heal(&self) -> Result<(), ControlError> {
        self.call(Command::Heal).await
    }

    /// Sets the link between `a` and `b` (both directions; the same region
    /// twice: its own traffic). Applies to datagrams and chunks read from
    /// now on.
    pub async fn set_link(&self, a: &str, b: &str, params: LinkParams) -> Result<(), ControlError> {
        self.change_link(a, b, params.into()).await
    }

    /// Changes some of a link's parameters, keeping the others.
    pub async fn change_link(
        &self,
        a: &str,
        b: &str,
        change: LinkChange,
    ) -> Result<(), ControlError> {
        let (a, b) = (a.to_string(), b.to_string());
        self.call(|r| Command::Link(a, b, change, r)).await
    }

    /// Links, partitions, counters and listeners now.
    pub async fn status(&self) -> Result<Status, ControlError> {
        self.call(Command::Status).await
    }
}
