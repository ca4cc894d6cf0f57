//! A TCP relay between the code under test and PostgreSQL, to kill connections
//! the way a proxy or a NAT does, not the polite way `pg_terminate_backend` does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpRelay {
    pub port: u16,
    /// Incremented by every cut; connections remember the value they started with.
    generation: Arc<AtomicU64>,
    cut_now: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
    lose_answer: Arc<AtomicBool>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

fn reset(stream: &TcpStream) {
    // Linger 0: closing sends RST, as a proxy dropping the connection does.
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

impl TcpRelay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let generation = Arc::new(AtomicU64::new(0));
        let (cut_now, cut_rx) = watch::channel(0u64);
        let gen2 = generation.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let refuse = Arc::new(AtomicBool::new(false));
        let lose_answer = Arc::new(AtomicBool::new(false));
        let (accepted2, refuse2, lose2) = (accepted.clone(), refuse.clone(), lose_answer.clone());
        let accept_task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted2.fetch_add(1, Ordering::SeqCst);
                if refuse2.load(Ordering::SeqCst) {
                    reset(&client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    reset(&client);
                    continue;
                };
                let born = gen2.load(Ordering::SeqCst);
                tokio::spawn(pump(
                    client,
                    server,
                    born,
                    gen2.clone(),
                    cut_rx.clone(),
                    lose2.clone(),
                ));
            }
        });
        Self {
            port,
            generation,
            cut_now,
            accepted,
            refuse,
            lose_answer,
            accept_task,
        }
    }

    /// The next answer the server sends is dropped and its connection reset: the
    /// statement ran (and, outside a transaction, committed) but the client never
    /// hears. What a proxy failing between the commit and the answer looks like.
    pub fn lose_next_answer(&self) {
        self.lose_answer.store(true, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Reset new connections as soon as they arrive (a proxy that is down).
    pub fn refuse_new(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Reset every live connection now (both sides get RST).
    pub fn cut_now(&self) {
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.cut_now.send(g);
    }

    /// The silent drop: live connections look open to the client, but the next bytes
    /// it sends are answered with a reset. This is what a connection dropped by the
    /// proxy while the Lambda instance was frozen looks like on thaw.
    pub fn cut_silently(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

async fn pump(
    mut client: TcpStream,
    mut server: TcpStream,
    born: u64,
    generation: Arc<AtomicU64>,
    mut cut_rx: watch::Receiver<u64>,
    lose_answer: Arc<AtomicBool>,
) {
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            changed = cut_rx.changed() => {
                if changed.is_err() || *cut_rx.borrow() > born {
                    reset(&client);
                    reset(&server);
                    return;
                }
            }
            n = client.read(&mut from_client) => {
                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                if generation.load(Ordering::SeqCst) > born {
                    reset(&client);
                    reset(&server);
                    return;
                }
                if server.write_all(&from_client[..n]).await.is_err() { return; }
            }
            n = server.read(&mut from_server) => {
                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                if lose_answer.swap(false, Ordering::SeqCst) {
                    reset(&client);
                    reset(&server);
                    return;
                }
                if client.write_all(&from_server[..n]).await.is_err() { return; }
            }
        }
    }
}
