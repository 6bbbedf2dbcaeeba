//! A future that is polled again only once it woke its task: for the guards a run races its
//! work against (cancellation, a deadline), which are almost never ready.
//!
//! A `select!` polls every branch each time the task wakes, and a run's task wakes for every
//! step of its agent. Polling a `CancellationToken`'s `cancelled()` takes the token's mutex
//! and its `Notify`'s lock each time; over a run of 17 events that was 2 to 3% of the server's
//! CPU (docs/performance.md). [`WakeGated`] polls its future on the first poll, then only
//! after the future itself woke the task: the future is handed a waker of its own that
//! notes the wake and passes it on to the task's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// See the module documentation. Built by [`wake_gated`].
#[must_use = "futures do nothing unless polled"]
pub struct WakeGated<F> {
    inner: Pin<Box<F>>,
    gate: Arc<Gate>,
    /// The waker handed to `inner`, made once.
    waker: Waker,
    /// Whether `inner` was polled yet.
    started: bool,
}

/// What `inner`'s waker shares with the gate.
struct Gate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// `future`, polled on its first poll and afterwards only once it woke its task.
pub fn wake_gated<F: Future>(future: F) -> WakeGated<F> {
    let gate = Arc::new(Gate {
        woken: AtomicBool::new(false),
        task: AtomicWaker::new(),
    });
    WakeGated {
        inner: Box::pin(future),
        waker: Waker::from(Arc::clone(&gate)),
        gate,
        started: false,
    }
}

impl<F: Future> Future for WakeGated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // `WakeGated` is `Unpin`: its future is boxed.
        let this = self.get_mut();
        // The task's waker first, then the look at the flag: a wake after the look finds
        // this waker and polls the task again.
        this.gate.task.register(cx.waker());
        if this.started && !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.started = true;
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core_context::CancellationToken;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts its polls; ready once `ready` is set, and wakes through the last waker it was
    /// given when `wake` is called.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn the_future_is_polled_first_and_then_only_after_it_woke_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(Mutex::new(None::<Waker>));
        let mut gated = wake_gated(Probe {
            polls: Arc::clone(&polls),
            ready: Arc::clone(&ready),
            waker: Arc::clone(&inner_waker),
        });
        let task_wakes = Arc::new(CountingWaker::default());
        let task_waker = Waker::from(Arc::clone(&task_wakes));
        let mut cx = Context::from_waker(&task_waker);

        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled on the first poll");
        // The task wakes for other reasons (its work's steps): the guard is not polled.
        for _ in 0..5 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "not polled when it did not wake"
        );

        // The future wakes: the task is woken and the next poll polls it, once.
        ready.store(true, Ordering::SeqCst);
        inner_waker.lock().unwrap().take().expect("a waker").wake();
        assert_eq!(task_wakes.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Many runs' guards on a multi-thread runtime, each cancelled from another task while
    /// its work keeps waking it: every one ends cancelled, none hangs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_from_another_thread_ends_a_busy_select() {
        let mut runs = Vec::new();
        for i in 0..200u64 {
            let token = CancellationToken::new();
            let cancel = token.clone();
            runs.push(tokio::spawn(async move {
                let work = async {
                    loop {
                        tokio::task::yield_now().await;
                    }
                };
                tokio::select! {
                    biased;
                    () = wake_gated(token.cancelled()) => "cancelled",
                    () = work => "finished",
                }
            }));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(50 * (i % 20))).await;
                cancel.cancel();
            });
        }
        for run in runs {
            let ended = tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .expect("a cancelled run ends")
                .expect("the run's task did not panic");
            assert_eq!(ended, "cancelled");
        }
    }
}
