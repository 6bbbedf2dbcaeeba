//! A TCP proxy between the client and the server that drops connections for real: at random
//! moments (chaos), all at once on demand, or at once on arrival while it refuses; and that
//! can send new connections to another server (a restart behind a load balancer).
//!
//! Each connection is one task: `copy_bidirectional` raced against its cut timer and the
//! proxy's cut-all signal. Whichever wins first, the loser is dropped with both sockets, so a
//! cut is a socket closing mid-stream (possibly mid-frame), exactly what a network does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    target: Mutex<SocketAddr>,
    /// Random cut times are drawn from this range, when set.
    chaos: Mutex<Option<(Duration, Duration)>>,
    refusing: AtomicBool,
    /// Connections cut (by chaos or by `cut_all`).
    cuts: AtomicUsize,
    cut_all: watch::Sender<u64>,
    seed: AtomicU64,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            chaos: Mutex::new(None),
            refusing: AtomicBool::new(false),
            cuts: AtomicUsize::new(0),
            cut_all: watch::channel(0).0,
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        });
        let accepting = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, Arc::clone(&accepting)));
            }
        });
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// The proxy as a server URL for the client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection after a random time between `min` and `max` from its start.
    pub fn cut_randomly(&self, min: Duration, max: Duration) {
        *self.shared.chaos.lock() = Some((min, max));
    }

    /// While `on`, new connections are closed as soon as they arrive.
    pub fn refuse(&self, on: bool) {
        self.shared.refusing.store(on, Ordering::SeqCst);
    }

    /// Cuts every open connection now.
    pub fn cut_all(&self) {
        self.shared
            .cut_all
            .send_modify(|generation| *generation += 1);
    }

    /// Sends new connections to `target`.
    pub fn retarget(&self, target: SocketAddr) {
        *self.shared.target.lock() = target;
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Shared {
    /// This connection's cut time, if chaos is on.
    fn cut_after(&self) -> Option<Duration> {
        let (min, max) = (*self.chaos.lock())?;
        let mut x = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let span = max.saturating_sub(min).as_micros().max(1) as u64;
        Some(min + Duration::from_micros(x % span))
    }
}

async fn relay(mut inbound: TcpStream, shared: Arc<Shared>) {
    if shared.refusing.load(Ordering::SeqCst) {
        return;
    }
    let target = *shared.target.lock();
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let mut cut_all = shared.cut_all.subscribe();
    let cut_after = shared.cut_after();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        () = tokio::time::sleep(cut_after.unwrap_or_default()), if cut_after.is_some() => {
            shared.cuts.fetch_add(1, Ordering::SeqCst);
        }
        _ = cut_all.changed() => {
            shared.cuts.fetch_add(1, Ordering::SeqCst);
        }
    }
}
