//! The broker's own thread: the node's Redis IO (its connections, the publisher and the
//! subscriber, and the hand-over of live frames to the bridge) runs on a single-threaded
//! runtime of its own rather than among the server's tasks.
//!
//! Under load the server's runtime holds thousands of ready tasks (a connection's writer per
//! delivered frame, the runs): a publisher woken behind them waited 3 to 11 ms on average
//! before sending a batch, and the subscriber as long before handing frames on, which was
//! most of a frame's time across nodes (measured in the cross-node steady load: p50 4.8 ms
//! against 0.6 ms on one node). On its own thread the operating system runs it as soon as
//! Redis answers.
//!
//! The thread lives as long as the [`BrokerRuntime`]: dropping the last handle stops it, and
//! the tasks still on it are dropped with it.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A thread running a single-threaded runtime until this is dropped.
pub(crate) struct BrokerRuntime {
    handle: Handle,
    /// Dropped with this: the thread's `block_on` then returns. Never sent; not joined, as
    /// the last handle may be dropped on the broker's own thread.
    _stop: oneshot::Sender<()>,
}

impl BrokerRuntime {
    /// Starts the thread, named `redis-broker`.
    pub(crate) fn start() -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("redis-broker".into())
            .spawn(move || {
                // Returns once the sender is dropped.
                let _ = runtime.block_on(stopped);
                // Dropping the runtime here, on its own thread, drops its remaining tasks.
                drop(runtime);
            })?;
        Ok(Arc::new(Self {
            handle,
            _stop: stop,
        }))
    }

    /// Where to spawn the broker's tasks.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_brokers_thread_until_it_is_dropped() {
        let runtime = BrokerRuntime::start().expect("a thread starts");
        let (name, named) = std::sync::mpsc::channel();
        runtime.handle().spawn(async move {
            let _ = name.send(std::thread::current().name().map(str::to_owned));
        });
        let thread = named
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the task ran");
        assert_eq!(thread.as_deref(), Some("redis-broker"));
        let (alive, gone) = std::sync::mpsc::channel::<()>();
        runtime.handle().spawn(async move {
            let _alive = alive;
            futures::future::pending::<()>().await;
        });
        drop(runtime);
        // The pending task is dropped with the runtime, and with it its sender.
        assert_eq!(
            gone.recv_timeout(std::time::Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
