//! A real TCP proxy in front of a server, for what a test needs to see or break between a client
//! and the server: how many connections are open at once, one connection cut after some bytes
//! of its answers, or every answer held once some bytes have passed, until the test releases
//! them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does besides passing bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plan {
    /// Cut the connection accepted `n`-th (from 1) once it has passed this many bytes of
    /// answers: both sides are closed, as a failing network would.
    pub cut: Option<(usize, u64)>,
    /// Hold every answer once this many bytes of answers have passed in all, until
    /// [`Proxy::release`].
    pub hold_after: Option<u64>,
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    /// `http://ADDR` of the proxy.
    pub base: String,
    stats: Arc<Stats>,
    released: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicUsize,
    open: AtomicUsize,
    most_open: AtomicUsize,
    answered: AtomicU64,
    cuts: AtomicUsize,
    holding: AtomicBool,
}

impl Proxy {
    /// A proxy to `upstream` that follows `plan`.
    pub async fn start(upstream: SocketAddr, plan: Plan) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let base = format!("http://{}", listener.local_addr().expect("proxy address"));
        let stats = Arc::new(Stats::default());
        let (released, watching) = watch::channel(false);
        let accepting = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = accepting.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let cut_after = plan.cut.filter(|(nth, _)| *nth == n).map(|(_, after)| after);
                let stats = Arc::clone(&accepting);
                let released = watching.clone();
                tokio::spawn(pipe(client, upstream, stats, cut_after, plan.hold_after, released));
            }
        });
        Proxy { base, stats, released, task }
    }

    /// The URL of `path` through the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_now(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at the same time.
    pub fn most_open(&self) -> usize {
        self.stats.most_open.load(Ordering::SeqCst)
    }

    /// Bytes of answers passed to clients so far.
    pub fn answered(&self) -> u64 {
        self.stats.answered.load(Ordering::SeqCst)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.stats.cuts.load(Ordering::SeqCst)
    }

    /// True once the proxy holds answers back (see [`Plan::hold_after`]).
    pub fn is_holding(&self) -> bool {
        self.stats.holding.load(Ordering::SeqCst)
    }

    /// Lets every held answer through, and every later one.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    client: TcpStream,
    upstream: SocketAddr,
    stats: Arc<Stats>,
    cut_after: Option<u64>,
    hold_after: Option<u64>,
    mut released: watch::Receiver<bool>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let open = stats.open.fetch_add(1, Ordering::SeqCst) + 1;
    stats.most_open.fetch_max(open, Ordering::SeqCst);
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let (client_gone, mut gone) = tokio::sync::oneshot::channel::<()>();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
        let _ = client_gone.send(());
    });
    let answers = async {
        let mut passed = 0;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if let Some(after) = cut_after
                && passed + n as u64 >= after
            {
                let last = &chunk[..(after - passed) as usize];
                let _ = to_client.write_all(last).await;
                stats.answered.fetch_add(last.len() as u64, Ordering::SeqCst);
                stats.cuts.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if let Some(limit) = hold_after
                && stats.answered.load(Ordering::SeqCst) >= limit
                && !*released.borrow()
            {
                stats.holding.store(true, Ordering::SeqCst);
                // A held connection whose client went away (a killed process) ends at once, so
                // nothing it held is passed on later.
                tokio::select! {
                    released = released.wait_for(|released| *released) => {
                        if released.is_err() {
                            break;
                        }
                    }
                    _ = &mut gone => break,
                }
            }
            if to_client.write_all(chunk).await.is_err() {
                return;
            }
            passed += n as u64;
            stats.answered.fetch_add(n as u64, Ordering::SeqCst);
        }
        let _ = to_client.shutdown().await;
    };
    answers.await;
    // The answers ended (the server closed, or the cut): dropping the requests' halves with them
    // closes both sockets.
    requests.abort();
    stats.open.fetch_sub(1, Ordering::SeqCst);
}
