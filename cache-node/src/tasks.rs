//! Owned, cancellable background tasks: every task a component starts is
//! kept in its `JoinSet` and stops with its token, and shutdown waits for
//! all of them, so no task outlives the component that started it.

use std::sync::Mutex;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A component's tasks.
#[derive(Debug)]
pub struct Tasks {
    set: Mutex<JoinSet<()>>,
    cancel: CancellationToken,
}

impl Tasks {
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            set: Mutex::new(JoinSet::new()),
            cancel,
        }
    }

    /// The token every task stops on (children of it stop too).
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Runs `f` until it ends or the token is cancelled; reaps finished tasks.
    pub fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        let mut set = self.set.lock().expect("tasks lock");
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = f => {}
            }
        });
    }

    /// Cancels every task and waits for them to end.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let mut set = std::mem::take(&mut *self.set.lock().expect("tasks lock"));
        while set.join_next().await.is_some() {}
    }
}
