//! A TLS and round-trip-time relay for the production-shaped cold starts
//! (`scripts/bench.sh coldstart`): every remote endpoint a function reaches at init
//! (Secrets Manager and KMS, which `moto` emulates over plain HTTP; PostgreSQL) is put
//! behind TLS and an emulated network round trip, so the figures show what a deployed
//! cold start pays for its connections rather than what loopback does.
//!
//!   relay --rtt-ms F --ready-file PATH --cert CERT.pem --key KEY.pem
//!         [--tcp NAME=HOST:PORT]... [--https NAME=HOST:PORT]...
//!         [--pg-iam NAME=HOST:PORT]... [--service-ms PREFIX=MS]...
//!
//! Every listener binds a free loopback port (`127.0.0.1:0`); when all are bound, the
//! relay writes `{"NAME": port, ..., "control": port}` to the ready file (atomically:
//! `PATH.tmp`, then a rename) and serves until SIGTERM or SIGINT (exit 0).
//!
//! **The round trip** (`--rtt-ms`, may be 0 or fractional) is emulated per accepted
//! connection, the same for the three kinds of listener: the upstream is connected at
//! once, then both directions are copied with delays. Each chunk read from one side
//! is written to the other one-way time (RTT/2) after it was read, in order; EOF is
//! forwarded in order, as a write shutdown; an error on either side closes both. The
//! client's first bytes are held until accept + 1 RTT + RTT/2 at the earliest: the
//! kernel's loopback connect returned at once, where a real one returns after the
//! SYN/SYN-ACK round trip, and the bytes then take the one-way time. So a TLS 1.3
//! handshake completes ≈ 2 RTT after the connect, as over a network, and each later
//! request/response exchange takes 1 RTT more than on loopback. Not modelled:
//! bandwidth (a chunk of any size takes the same time), packet loss and
//! retransmission, TCP slow start and congestion windows, Nagle and delayed ACKs
//! (TCP_NODELAY is set on every socket the relay opens or accepts), jitter. A chunk is
//! held by a thread of each direction's own that sleeps until its time (the kernel's
//! timer, tens of microseconds late; tokio's, which rounds up to its millisecond
//! wheel, was ≈ 1 ms late per chunk). With `--rtt-ms 0` it is a plain relay, without
//! delays.
//!
//! The listener kinds:
//!
//! - `--tcp NAME=HOST:PORT`: just the round-trip relay to HOST:PORT (PostgreSQL,
//!   which does its own TLS after the client's SSLRequest).
//! - `--https NAME=HOST:PORT`: the round-trip relay in front of an internal
//!   TLS-terminating HTTP/1.1 reverse proxy (rustls on aws-lc-rs, TLS 1.3 and 1.2,
//!   ALPN `http/1.1`, `--cert`/`--key`, keep-alive) to `http://HOST:PORT`: method,
//!   path and query, headers (without the hop-by-hop ones; `Host` as the client sent
//!   it) and body are forwarded, the response comes back as it is. Before forwarding,
//!   the answer takes at least the service time of the first `--service-ms
//!   PREFIX=MS` whose PREFIX starts its `X-Amz-Target` (`secretsmanager.=15`,
//!   `TrentService.=3` for KMS): the emulator's own time counts in it, and the answer
//!   is held until the figure is reached; none matching, no wait.
//! - `--pg-iam NAME=HOST:PORT`: the round-trip relay in front of an RDS Proxy
//!   stand-in for IAM database auth: an SSLRequest is answered `S` and TLS follows
//!   (anything else but a GSSENCRequest, answered `N`, gets FATAL 28000); the
//!   StartupMessage's parameters are kept, the password is asked in cleartext and must
//!   look like an RDS IAM auth token for that user (`Action=connect`,
//!   `DBUser=<user as SigV4 encodes it>`, `X-Amz-Signature`, `X-Amz-Credential`,
//!   `X-Amz-Expires`: the shape only, the signature is not checked), else FATAL 28P01.
//!   Then the same StartupMessage goes over plain TCP to HOST:PORT, which must let the
//!   login in with `trust` (anything but AuthenticationOk: FATAL 28000), and from its
//!   AuthenticationOk on the bytes are relayed verbatim both ways.
//!
//! `control` is a plain HTTP listener: `GET /stats` gives `{NAME: {"connections",
//! "tls_handshakes", "logins", "requests": {"<X-Amz-Target, or METHOD /path>": n}}}`
//! (connections as accepted by the round-trip relay, handshakes and logins completed,
//! requests as received by the HTTPS proxy) and `POST /reset` zeroes them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_rustls::TlsAcceptor;

type Error = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: relay --rtt-ms F --ready-file PATH --cert CERT.pem --key KEY.pem \
    [--tcp NAME=HOST:PORT]... [--https NAME=HOST:PORT]... [--pg-iam NAME=HOST:PORT]... \
    [--service-ms PREFIX=MS]...";

/// The name of the stats listener in the ready file.
const CONTROL: &str = "control";

/// What kind of front end a listener is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Https,
    PgIam,
}

/// One `--tcp`/`--https`/`--pg-iam` NAME=HOST:PORT.
struct Endpoint {
    kind: Kind,
    name: String,
    upstream: String,
}

struct Args {
    rtt: Duration,
    ready_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    endpoints: Vec<Endpoint>,
    /// `--service-ms`, in command-line order: the first matching prefix wins.
    service: Vec<(String, Duration)>,
}

fn millis(flag: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms >= 0.0 => Ok(Duration::from_secs_f64(ms / 1000.0)),
        _ => Err(format!(
            "{flag}: {value:?} is not a non-negative number of milliseconds"
        )),
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut rtt, mut ready_file, mut cert, mut key) = (None, None, None, None);
    let mut endpoints = Vec::new();
    let mut service = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let kind = match flag.as_str() {
            "--rtt-ms" => {
                rtt = Some(millis(&flag, &value)?);
                continue;
            }
            "--ready-file" => {
                ready_file = Some(PathBuf::from(value));
                continue;
            }
            "--cert" => {
                cert = Some(PathBuf::from(value));
                continue;
            }
            "--key" => {
                key = Some(PathBuf::from(value));
                continue;
            }
            "--service-ms" => {
                let (prefix, ms) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--service-ms {value:?}: expected PREFIX=MS"))?;
                service.push((prefix.to_owned(), millis(&flag, ms)?));
                continue;
            }
            "--tcp" => Kind::Tcp,
            "--https" => Kind::Https,
            "--pg-iam" => Kind::PgIam,
            _ => return Err(format!("unknown argument {flag:?}")),
        };
        let (name, upstream) = value
            .split_once('=')
            .filter(|(name, upstream)| !name.is_empty() && !upstream.is_empty())
            .ok_or_else(|| format!("{flag} {value:?}: expected NAME=HOST:PORT"))?;
        if name == CONTROL || endpoints.iter().any(|e: &Endpoint| e.name == name) {
            return Err(format!("{flag} {value:?}: the name {name:?} is taken"));
        }
        endpoints.push(Endpoint {
            kind,
            name: name.to_owned(),
            upstream: upstream.to_owned(),
        });
    }
    Ok(Args {
        rtt: rtt.ok_or("--rtt-ms is required")?,
        ready_file: ready_file.ok_or("--ready-file is required")?,
        cert: cert.ok_or("--cert is required")?,
        key: key.ok_or("--key is required")?,
        endpoints,
        service,
    })
}

/// The counters of one named listener.
#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    tls_handshakes: AtomicU64,
    logins: AtomicU64,
    requests: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn count_request(&self, key: String) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default() += 1;
    }

    fn to_json(&self) -> Value {
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        json!({
            "connections": self.connections.load(Ordering::Relaxed),
            "tls_handshakes": self.tls_handshakes.load(Ordering::Relaxed),
            "requests": requests,
            "logins": self.logins.load(Ordering::Relaxed),
        })
    }

    fn reset(&self) {
        self.connections.store(0, Ordering::Relaxed);
        self.tls_handshakes.store(0, Ordering::Relaxed);
        self.logins.store(0, Ordering::Relaxed);
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

type AllStats = Arc<BTreeMap<String, Arc<Stats>>>;

async fn get_stats(State(all): State<AllStats>) -> axum::Json<Value> {
    let stats: Map<String, Value> = all
        .iter()
        .map(|(name, stats)| (name.clone(), stats.to_json()))
        .collect();
    axum::Json(Value::Object(stats))
}

async fn reset_stats(State(all): State<AllStats>) -> StatusCode {
    all.values().for_each(|stats| stats.reset());
    StatusCode::NO_CONTENT
}

/// Errors a peer going away produces: not worth a line on stderr.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Accepts the next connection, with TCP_NODELAY; an accept error (out of file
/// descriptors, say) is reported and retried.
async fn accept(listener: &TcpListener, name: &str) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    eprintln!("relay {name}: TCP_NODELAY: {e}");
                }
                return stream;
            }
            Err(e) => {
                eprintln!("relay {name}: accept: {e}");
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The round-trip relay of one listener: every accepted connection is relayed to
/// `upstream` with the emulated delays.
async fn serve_rtt(
    listener: TcpListener,
    name: String,
    upstream: String,
    rtt: Duration,
    stats: Arc<Stats>,
) {
    loop {
        let client = accept(&listener, &name).await;
        let accepted = Instant::now();
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let (name, upstream) = (name.clone(), upstream.clone());
        tokio::spawn(async move {
            if let Err(e) = rtt_relay(client, accepted, &upstream, rtt).await
                && !is_disconnect(&e)
            {
                eprintln!("relay {name} → {upstream}: {e}");
            }
        });
    }
}

async fn rtt_relay(
    mut client: TcpStream,
    accepted: Instant,
    upstream: &str,
    rtt: Duration,
) -> io::Result<()> {
    let mut upstream = TcpStream::connect(upstream).await?;
    upstream.set_nodelay(true)?;
    if rtt.is_zero() {
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    let one_way = rtt / 2;
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    // An error in either direction returns here and drops all four halves: both
    // connections are closed.
    tokio::try_join!(
        delayed_copy(
            client_read,
            upstream_write,
            one_way,
            accepted + rtt + one_way
        ),
        delayed_copy(upstream_read, client_write, one_way, accepted),
    )?;
    Ok(())
}

/// A chunk read from one side, to be written to the other at the instant given;
/// `None` is EOF.
type Stamped = (Instant, Option<Vec<u8>>);

/// Copies `from` to `to`, each chunk `delay` after it was read and never before
/// `not_before`, in order; EOF becomes a write shutdown. The delay is kept by a
/// thread of its own ([`delay_line`]), not by tokio's timer: that rounds a deadline up
/// to its millisecond wheel and fires up to ≈ 2 ms late (measured: a 20 ms round trip
/// took 22.8 ms), which at an in-region RTT of 1 ms would be most of the figure.
async fn delayed_copy(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    not_before: Instant,
) -> io::Result<()> {
    let (line, mut due) = delay_line();
    let read = async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            let at = (Instant::now() + delay).max(not_before);
            let chunk = (n > 0).then(|| buf[..n].to_vec());
            // The line stops only when the writer failed, and the join below has
            // then returned already.
            let _ = line.send((at, chunk));
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
        }
    };
    let write = async move {
        while let Some(chunk) = due.recv().await {
            match chunk {
                Some(bytes) => to.write_all(&bytes).await?,
                None => {
                    to.shutdown().await?;
                    break;
                }
            }
        }
        Ok::<_, io::Error>(())
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

/// A delay line: chunks sent in stamped with their instant come out of the receiver
/// at that instant, in order. An OS thread sleeps until each (the kernel's timer: tens
/// of microseconds late) and hands the chunk on; it ends when the sender is dropped.
fn delay_line() -> (
    std::sync::mpsc::Sender<Stamped>,
    mpsc::UnboundedReceiver<Option<Vec<u8>>>,
) {
    let (line, stamped) = std::sync::mpsc::channel::<Stamped>();
    let (due, out) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok((at, chunk)) = stamped.recv() {
            let at = at.into_std();
            let now = std::time::Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if due.send(chunk).is_err() {
                break;
            }
        }
    });
    (line, out)
}

fn tls_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, Error> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The HTTPS front end's forwarding state, shared by its connections.
struct HttpsProxy {
    name: String,
    /// `http://HOST:PORT`.
    base: String,
    client: reqwest::Client,
    service: Arc<Vec<(String, Duration)>>,
    stats: Arc<Stats>,
}

/// The internal TLS-terminating HTTP/1.1 server behind an `--https` round-trip relay.
async fn serve_https(listener: TcpListener, acceptor: TlsAcceptor, proxy: Arc<HttpsProxy>) {
    loop {
        let stream = accept(&listener, &proxy.name).await;
        let (acceptor, proxy) = (acceptor.clone(), proxy.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    if !is_disconnect(&e) {
                        eprintln!("relay {}: TLS handshake: {e}", proxy.name);
                    }
                    return;
                }
            };
            proxy.stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            let service = {
                let proxy = proxy.clone();
                service_fn(move |request| forward(proxy.clone(), request))
            };
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service)
                .await
                && !e.is_incomplete_message()
            {
                eprintln!("relay {}: HTTP: {e}", proxy.name);
            }
        });
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and
/// those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

async fn forward(
    proxy: Arc<HttpsProxy>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match forward_request(&proxy, request).await {
        Ok(response) => response,
        Err(e) => {
            let e = with_sources(&*e);
            eprintln!("relay {} → {}: {e}", proxy.name, proxy.base);
            let mut response = Response::new(Full::new(Bytes::from(format!(
                "relay {}: the upstream failed: {e}\n",
                proxy.name
            ))));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    })
}

/// An error and its causes, `: `-separated (reqwest's own message is only the outermost).
fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

async fn forward_request(
    proxy: &HttpsProxy,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Error> {
    let (parts, body) = request.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    proxy.stats.count_request(
        target
            .clone()
            .unwrap_or_else(|| format!("{} {}", parts.method, parts.uri.path())),
    );
    let body = body.collect().await?.to_bytes();
    let service = target.as_deref().and_then(|target| {
        proxy
            .service
            .iter()
            .find(|(prefix, _)| target.starts_with(prefix.as_str()))
    });
    // The service time is the whole time the service takes: the emulator's own is
    // counted in it (padded up to the figure after its answer), never added.
    let served_by = service.map(|(_, time)| tokio::time::Instant::now() + *time);
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let upstream = proxy
        .client
        .request(parts.method, format!("{}{path}", proxy.base))
        .headers(headers)
        .body(body)
        .send()
        .await?;
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    strip_hop_by_hop(&mut headers);
    let body = upstream.bytes().await?;
    if let Some(at) = served_by {
        sleep_until(at).await;
    }
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

// The PostgreSQL front end (protocol 3, "Message Formats" in the PostgreSQL manual).

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
/// The longest startup packet accepted (PostgreSQL's own limit).
const MAX_STARTUP: usize = 10_000;
/// The longest message accepted before the login is done.
const MAX_MESSAGE: usize = 1 << 20;

/// What the RDS Proxy stand-in needs of an `--pg-iam` listener.
struct PgIam {
    name: String,
    backend: String,
    acceptor: TlsAcceptor,
    stats: Arc<Stats>,
}

async fn serve_pg_iam(listener: TcpListener, pg: Arc<PgIam>) {
    loop {
        let stream = accept(&listener, &pg.name).await;
        let pg = pg.clone();
        tokio::spawn(async move {
            if let Err(e) = pg_iam_session(stream, &pg).await
                && !is_disconnect(&e)
            {
                eprintln!("relay {}: {e}", pg.name);
            }
        });
    }
}

/// A startup packet (no type byte): its code and the rest of its body.
async fn read_startup(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<(i32, Vec<u8>)> {
    let len = usize::try_from(stream.read_i32().await?).unwrap_or(0);
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(invalid(format!("a startup packet of {len} bytes")));
    }
    let code = stream.read_i32().await?;
    let mut body = vec![0; len - 8];
    stream.read_exact(&mut body).await?;
    Ok((code, body))
}

/// A typed message: its type byte and body (without the length).
async fn read_message(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<(u8, Vec<u8>)> {
    let tag = stream.read_u8().await?;
    let len = usize::try_from(stream.read_i32().await?).unwrap_or(0);
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(invalid(format!(
            "a message {:?} of {len} bytes",
            char::from(tag)
        )));
    }
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).await?;
    Ok((tag, body))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let len = i32::try_from(body.len() + 4).unwrap_or(i32::MAX);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn startup_packet(code: i32, body: &[u8]) -> Vec<u8> {
    let len = i32::try_from(body.len() + 8).unwrap_or(i32::MAX);
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An ErrorResponse of severity FATAL.
fn fatal(code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', text)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// Sends a FATAL error and closes (for TLS, with a close_notify).
async fn refuse(stream: &mut (impl AsyncWrite + Unpin), code: &str, text: &str) -> io::Result<()> {
    stream.write_all(&fatal(code, text)).await?;
    stream.flush().await?;
    // The client may be gone already: nothing more to tell it.
    let _ = stream.shutdown().await;
    Ok(())
}

/// The StartupMessage's NUL-terminated name/value pairs (ending with an empty name).
fn startup_parameters(body: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut fields = body.split(|&b| b == 0);
    let mut parameters = Vec::new();
    loop {
        let name = fields.next()?;
        if name.is_empty() {
            // The terminator: it must be the body's last byte.
            return (fields.next() == Some(&[][..]) && fields.next().is_none())
                .then_some(parameters);
        }
        parameters.push((name, fields.next()?));
    }
}

/// `value` %-encoded as a SigV4 query value (everything but `A-Za-z0-9-_.~`), as
/// the RDS auth token's signer encodes `DBUser`.
fn sigv4_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether `token` has the shape of an RDS IAM auth token for `user`:
/// `HOST:PORT/?Action=connect&DBUser=<user>&X-Amz-…` (a presigned URL without its
/// scheme). The signature itself is IAM's to check.
fn looks_like_iam_token(token: &str, user: &str) -> bool {
    let query = token.split_once('?').map_or(token, |(_, query)| query);
    let db_user = sigv4_encode(user);
    let pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let has = |name: &str, value: Option<&str>| {
        pairs
            .iter()
            .any(|&(n, v)| n == name && value.is_none_or(|value| v == value))
    };
    has("Action", Some("connect"))
        && has("DBUser", Some(&db_user))
        && has("X-Amz-Signature", None)
        && has("X-Amz-Credential", None)
        && has("X-Amz-Expires", None)
}

async fn pg_iam_session(mut client: TcpStream, pg: &PgIam) -> io::Result<()> {
    loop {
        match read_startup(&mut client).await? {
            (SSL_REQUEST, _) => {
                client.write_all(b"S").await?;
                break;
            }
            (GSSENC_REQUEST, _) => client.write_all(b"N").await?,
            _ => return refuse(&mut client, "28000", "IAM auth needs TLS").await,
        }
    }
    let mut client = pg.acceptor.accept(client).await?;
    pg.stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);

    let (code, body) = read_startup(&mut client).await?;
    if code == CANCEL_REQUEST {
        // The client holds the backend's own BackendKeyData: pass the cancel on.
        let mut backend = TcpStream::connect(&pg.backend).await?;
        backend.write_all(&startup_packet(code, &body)).await?;
        return backend.shutdown().await;
    }
    if code >> 16 != 3 {
        let text = format!(
            "unsupported frontend protocol {}.{}",
            code >> 16,
            code & 0xffff
        );
        return refuse(&mut client, "0A000", &text).await;
    }
    let Some(parameters) = startup_parameters(&body) else {
        return refuse(&mut client, "08P01", "invalid startup packet layout").await;
    };
    let user = parameters
        .iter()
        .find(|(name, _)| *name == b"user")
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
    let Some(user) = user else {
        let text = "no PostgreSQL user name specified in startup packet";
        return refuse(&mut client, "28000", text).await;
    };

    // AuthenticationCleartextPassword.
    client
        .write_all(&message(b'R', &3_i32.to_be_bytes()))
        .await?;
    client.flush().await?;
    let (tag, password) = read_message(&mut client).await?;
    if tag != b'p' {
        return refuse(&mut client, "08P01", "expected a password response").await;
    }
    let token = password.split(|&b| b == 0).next().unwrap_or_default();
    let valid = std::str::from_utf8(token).is_ok_and(|token| looks_like_iam_token(token, &user));
    if !valid {
        let text = format!("PAM authentication failed for user \"{user}\"");
        return refuse(&mut client, "28P01", &text).await;
    }
    pg.stats.logins.fetch_add(1, Ordering::Relaxed);

    // The same login, over plain TCP, to a backend that trusts it.
    let mut backend = TcpStream::connect(&pg.backend).await?;
    backend.set_nodelay(true)?;
    backend.write_all(&startup_packet(code, &body)).await?;
    loop {
        let (tag, body) = read_message(&mut backend).await?;
        match tag {
            b'R' if body.get(..4) == Some(&[0, 0, 0, 0][..]) => {
                client.write_all(&message(tag, &body)).await?;
                break;
            }
            b'R' => {
                let text = "the relay's backend login needs trust auth";
                return refuse(&mut client, "28000", text).await;
            }
            // NegotiateProtocolVersion, a NoticeResponse: the client's to read.
            b'v' | b'N' => client.write_all(&message(tag, &body)).await?,
            // The backend refused the login: the client gets its reason.
            b'E' => {
                client.write_all(&message(tag, &body)).await?;
                client.flush().await?;
                let _ = client.shutdown().await;
                return Ok(());
            }
            _ => {
                let text = format!(
                    "unexpected message {:?} from the backend before its login",
                    char::from(tag)
                );
                return refuse(&mut client, "08P01", &text).await;
            }
        }
    }
    client.flush().await?;
    tokio::io::copy_bidirectional(&mut client, &mut backend).await?;
    Ok(())
}

async fn run(args: Args) -> Result<(), Error> {
    let https_tls = tls_config(&args.cert, &args.key, &[b"http/1.1"])?;
    let pg_tls = tls_config(&args.cert, &args.key, &[])?;
    let service = Arc::new(args.service);
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    let mut ports = Map::new();
    let mut all_stats = BTreeMap::new();
    for endpoint in args.endpoints {
        let stats = Arc::new(Stats::default());
        all_stats.insert(endpoint.name.clone(), stats.clone());
        let front = TcpListener::bind("127.0.0.1:0").await?;
        ports.insert(endpoint.name.clone(), front.local_addr()?.port().into());
        // The round-trip relay's upstream: the given one, or the internal server.
        let upstream = match endpoint.kind {
            Kind::Tcp => endpoint.upstream,
            Kind::Https => {
                let internal = TcpListener::bind("127.0.0.1:0").await?;
                let address = internal.local_addr()?.to_string();
                let proxy = Arc::new(HttpsProxy {
                    name: endpoint.name.clone(),
                    base: format!("http://{}", endpoint.upstream),
                    client: client.clone(),
                    service: service.clone(),
                    stats: stats.clone(),
                });
                let acceptor = TlsAcceptor::from(https_tls.clone());
                tokio::spawn(serve_https(internal, acceptor, proxy));
                address
            }
            Kind::PgIam => {
                let internal = TcpListener::bind("127.0.0.1:0").await?;
                let address = internal.local_addr()?.to_string();
                let pg = Arc::new(PgIam {
                    name: endpoint.name.clone(),
                    backend: endpoint.upstream,
                    acceptor: TlsAcceptor::from(pg_tls.clone()),
                    stats: stats.clone(),
                });
                tokio::spawn(serve_pg_iam(internal, pg));
                address
            }
        };
        tokio::spawn(serve_rtt(front, endpoint.name, upstream, args.rtt, stats));
    }

    let control = TcpListener::bind("127.0.0.1:0").await?;
    ports.insert(CONTROL.to_owned(), control.local_addr()?.port().into());
    let app = Router::new()
        .route("/stats", get(get_stats))
        .route("/reset", post(reset_stats))
        .with_state(Arc::new(all_stats));
    let mut server = tokio::spawn(async move { axum::serve(control, app).await });

    let mut tmp = args.ready_file.clone().into_os_string();
    tmp.push(".tmp");
    std::fs::write(&tmp, serde_json::to_vec(&Value::Object(ports))?)?;
    std::fs::rename(&tmp, &args.ready_file)?;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => Ok(()),
        interrupted = tokio::signal::ctrl_c() => Ok(interrupted?),
        served = &mut server => Err(format!("the control server stopped: {:?}", served?).into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("relay: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e}");
            ExitCode::FAILURE
        }
    }
}
