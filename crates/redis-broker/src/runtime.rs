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
//!
//! A connection stays on the thread only if nothing off it reconnects it: the client library
//! opens a connection anew on the runtime of the call that found it dropped, and the new
//! connection's task lives there (on the server's runtime, among its tasks, or on a runtime
//! that is then dropped, the connection with it). So calls made off the thread go to it to be
//! made ([`Home`], used by `conn`).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// On a broker's thread, its [`Home`]'s number (0 elsewhere).
    static HOME: Cell<u64> = const { Cell::new(0) };
}

/// The next broker thread's number.
static NEXT_HOME: AtomicU64 = AtomicU64::new(1);

/// A broker's thread, as its connections know it: where to run calls made off it.
#[derive(Clone, Debug)]
pub(crate) struct Home {
    handle: Handle,
    id: u64,
}

impl Home {
    /// Where to run a call made off the thread: `None` on the thread itself.
    pub(crate) fn away(&self) -> Option<&Handle> {
        (HOME.with(Cell::get) != self.id).then_some(&self.handle)
    }
}

/// A thread running a single-threaded runtime until this is dropped.
pub(crate) struct BrokerRuntime {
    handle: Handle,
    home: Home,
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
        let home = NEXT_HOME.fetch_add(1, Ordering::Relaxed);
        std::thread::Builder::new()
            .name("redis-broker".into())
            .spawn(move || {
                HOME.with(|id| id.set(home));
                // Returns once the sender is dropped.
                let _ = runtime.block_on(stopped);
                // Dropping the runtime here, on its own thread, drops its remaining tasks.
                drop(runtime);
            })?;
        Ok(Arc::new(Self {
            home: Home {
                handle: handle.clone(),
                id: home,
            },
            handle,
            _stop: stop,
        }))
    }

    /// The thread as its connections know it ([`Home`]).
    pub(crate) fn home(&self) -> Home {
        self.home.clone()
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

    #[test]
    fn a_home_sends_calls_made_off_its_thread_to_it() {
        let (one, two) = (
            BrokerRuntime::start().expect("a thread starts"),
            BrokerRuntime::start().expect("a thread starts"),
        );
        let home = one.home();
        let on_its_thread = |runtime: &BrokerRuntime, home: Home| {
            let (sent, got) = std::sync::mpsc::channel();
            runtime.handle().spawn(async move {
                let _ = sent.send(home.away().is_none());
            });
            got.recv_timeout(std::time::Duration::from_secs(5))
                .expect("the task ran")
        };
        assert!(
            on_its_thread(&one, home.clone()),
            "on its own thread a call is made there"
        );
        assert!(home.away().is_some(), "off it, a call goes to it");
        assert!(
            !on_its_thread(&two, home.clone()),
            "another broker's thread sends it there too"
        );
        assert_ne!(two.home().id, home.id, "each thread is a home of its own");
    }
}
