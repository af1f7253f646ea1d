//! A listener that an unauthenticated client cannot exhaust, for tokend and
//! for resource services alike.
//!
//! - **Connections are capped** (below the open-files limit, which is raised
//!   to its hard limit at start). At the cap, a new connection evicts the
//!   oldest one that has not sent anything yet; if every connection is
//!   active, the new one is closed.
//! - **Idle connections go**: a connection must finish its TLS handshake and
//!   send its first bytes (the HTTP/2 preface) within a deadline.
//! - **Per-connection limits** ([`Limits::server`]): at most N concurrent
//!   streams, a deadline for every call, HTTP/2 keepalive, bounded headers
//!   and reset streams, and a maximum age after which the connection must
//!   be made again (so TLS changes reach every connection).
//!
//! Plaintext and TLS connections are told apart only by their type, so
//! tonic's connection info works unchanged: `Request::remote_addr()` for
//! both, `Request::peer_certs()` for TLS clients.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::tls::ServerTls;

/// Open files kept free for everything but connections (Redis, key files,
/// outgoing calls).
const FD_RESERVE: u64 = 64;

/// What one listener allows. Defaults a public-facing service can keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_connections: usize,
    handshake_timeout: Duration,
    max_concurrent_streams: u32,
    request_timeout: Duration,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    max_header_list_size: u32,
    max_connection_age: Duration,
}

/// Default [`Limits::max_connection_age`]: what a rotated client CA (or a
/// revoked certificate) takes at most to reach established connections.
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_streams: 128,
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_header_list_size: 16 * 1024,
            max_connection_age: DEFAULT_MAX_CONNECTION_AGE,
        }
    }
}

impl Limits {
    /// Most connections at once (also bounded by the open-files limit).
    pub fn max_connections(mut self, max: usize) -> Limits {
        self.max_connections = max.max(1);
        self
    }

    /// How long a connection may take to finish its TLS handshake and send
    /// its first bytes.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Limits {
        self.handshake_timeout = timeout;
        self
    }

    /// Most concurrent streams (calls) per connection.
    pub fn max_concurrent_streams(mut self, max: u32) -> Limits {
        self.max_concurrent_streams = max.max(1);
        self
    }

    /// The server-side deadline of every call (until its response starts).
    pub fn request_timeout(mut self, timeout: Duration) -> Limits {
        self.request_timeout = timeout;
        self
    }

    /// How often an idle connection is pinged, and how long the answer may
    /// take before the connection is closed.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Limits {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// How long a connection lives at most: then it is told to go away
    /// (HTTP/2 GOAWAY; clients reconnect, with a new TLS handshake against
    /// the configuration in force), and closed once its calls finished or
    /// the request timeout passed. This is how a new client CA, or the end
    /// of a certificate's trust, reaches connections made before.
    pub fn max_connection_age(mut self, age: Duration) -> Limits {
        self.max_connection_age = age.max(Duration::from_secs(1));
        self
    }

    /// A tonic server builder with the per-connection limits applied.
    pub fn server(&self) -> Server {
        Server::builder()
            .max_connection_age(self.max_connection_age)
            .max_connection_age_grace(self.request_timeout)
            .max_concurrent_streams(self.max_concurrent_streams)
            .timeout(self.request_timeout)
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .http2_max_header_list_size(self.max_header_list_size)
            .http2_max_pending_accept_reset_streams(Some(64))
            .tcp_nodelay(true)
    }
}

/// Raises the open-files soft limit to the hard limit; returns the limit
/// now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    rlimit::increase_nofile_limit(hard)
}

/// The connections of one listener, oldest first, for the cap.
#[derive(Debug, Default)]
struct Registry {
    connections: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
}

#[derive(Debug, Default)]
struct ConnState {
    /// The first bytes arrived: never evicted.
    started: AtomicBool,
    evicted: AtomicBool,
    /// Wakes the connection's reader when evicted.
    waker: AtomicWaker,
    /// Wakes a TLS handshake in progress when evicted.
    notify: Notify,
}

impl Registry {
    /// Registers a new connection, evicting the oldest idle one if at `cap`.
    /// `None`: at the cap with every connection active.
    fn admit(self: &Arc<Self>, cap: usize) -> Option<Slot> {
        let mut connections = self.connections.lock().ok()?;
        if connections.len() >= cap {
            let idle = connections.iter().find(|(_, c)| {
                !c.started.load(Ordering::Acquire) && !c.evicted.load(Ordering::Acquire)
            });
            let (_, idle) = idle?;
            idle.evicted.store(true, Ordering::Release);
            idle.waker.wake();
            idle.notify.notify_one();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::default());
        connections.insert(id, Arc::clone(&state));
        Some(Slot {
            registry: Arc::clone(self),
            id,
            state,
        })
    }
}

/// A connection's place under the cap, given back when it closes.
#[derive(Debug)]
struct Slot {
    registry: Arc<Registry>,
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut connections) = self.registry.connections.lock() {
            connections.remove(&self.id);
        }
    }
}

/// An accepted connection under the listener's rules: its reads fail once
/// it is evicted or misses its first-bytes deadline.
#[derive(Debug)]
pub struct Connection<S> {
    io: S,
    slot: Slot,
    /// Until the first bytes arrive.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Connection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = &mut this.deadline {
            let state = &this.slot.state;
            state.waker.register(cx.waker());
            if state.evicted.load(Ordering::Acquire) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "evicted: too many connections",
                )));
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request in time",
                )));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.deadline.is_some()
            && matches!(read, Poll::Ready(Ok(())))
            && buf.filled().len() > before
        {
            this.deadline = None;
            this.slot.state.started.store(true, Ordering::Release);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Connection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<S: Connected> Connected for Connection<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// The connections a server takes from a [`Listener`].
pub type Incoming<S> = ReceiverStream<io::Result<Connection<S>>>;

/// A bound TCP listener with [`Limits`].
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    limits: Limits,
    cap: usize,
}

impl Listener {
    /// Takes over a bound listener. The connection cap is the limits' or, if
    /// lower, what the open-files limit leaves room for.
    pub fn new(listener: TcpListener, limits: Limits) -> Listener {
        let files = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
        let room = usize::try_from(files.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
        Listener {
            listener,
            limits,
            cap: limits.max_connections.min(room),
        }
    }

    /// Where it listens.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The connection cap in force.
    pub fn max_connections(&self) -> usize {
        self.cap
    }

    /// Serves plaintext: accepts on a task of its own, for as long as the
    /// returned stream is alive.
    pub fn plaintext(self) -> Incoming<TcpStream> {
        let (sender, incoming) = mpsc::channel(64);
        let timeout = self.limits.handshake_timeout;
        tokio::spawn(async move {
            let mut acceptor = Acceptor::new(self);
            while let Some((tcp, _, slot)) = acceptor.next(&sender).await {
                let connection = Connection {
                    io: tcp,
                    slot,
                    deadline: Some(Box::pin(tokio::time::sleep(timeout))),
                };
                if sender.send(Ok(connection)).await.is_err() {
                    return;
                }
            }
        });
        ReceiverStream::new(incoming)
    }

    /// Serves TLS with `tls` (reloadable: each handshake takes the latest
    /// configuration). Handshakes run on tasks of their own, so a slow one
    /// holds up nobody.
    pub fn tls(self, tls: ServerTls) -> Incoming<TlsStream<TcpStream>> {
        let (sender, incoming) = mpsc::channel(64);
        let timeout = self.limits.handshake_timeout;
        tokio::spawn(async move {
            let mut acceptor = Acceptor::new(self);
            while let Some((tcp, peer, slot)) = acceptor.next(&sender).await {
                let tls = TlsAcceptor::from(tls.config());
                let sender = sender.clone();
                tokio::spawn(async move {
                    // One deadline for the handshake and the first bytes.
                    let deadline = tokio::time::Instant::now() + timeout;
                    let evicted = slot.state.notify.notified();
                    let stream = tokio::select! {
                        handshake = tokio::time::timeout_at(deadline, tls.accept(tcp)) => match handshake {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(err)) => return debug!(%peer, error = %err, "TLS handshake failed"),
                            Err(_) => return debug!(%peer, "TLS handshake timed out"),
                        },
                        () = evicted => return,
                    };
                    let connection = Connection {
                        io: stream,
                        slot,
                        deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    let _ = sender.send(Ok(connection)).await;
                });
            }
        });
        ReceiverStream::new(incoming)
    }
}

/// Accepts TCP connections and admits them under the cap.
struct Acceptor {
    listener: TcpListener,
    cap: usize,
    registry: Arc<Registry>,
    refused: u64,
}

impl Acceptor {
    fn new(listener: Listener) -> Acceptor {
        Acceptor {
            listener: listener.listener,
            cap: listener.cap,
            registry: Arc::new(Registry::default()),
            refused: 0,
        }
    }

    /// The next admitted connection; `None` once nobody takes connections
    /// from `sender` any more.
    async fn next<T>(&mut self, sender: &mpsc::Sender<T>) -> Option<(TcpStream, SocketAddr, Slot)> {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = sender.closed() => return None,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of files or the like: back off, never spin.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match self.registry.admit(self.cap) {
                Some(slot) => return Some((tcp, peer, slot)),
                None => {
                    self.refused += 1;
                    if self.refused.is_power_of_two() {
                        warn!(
                            %peer,
                            refused = self.refused,
                            cap = self.cap,
                            "connection cap reached with every connection active: refusing"
                        );
                    }
                }
            }
        }
    }
}
