//! The transport's defences against hostile or broken clients (docs/transport.md): a cap on
//! connections, a deadline for the HTTP/2 handshake, an idle timeout, and a budget for the
//! response bytes that clients have not read. Keepalive pings, the streams per connection and
//! the header size are hyper's own settings, set in `server.rs`.
//!
//! A connection is a [`Guarded`] socket: it holds a permit of the connection cap and fails its
//! own reads when its handshake or idle deadline passes, which closes it. [`StreamLayer`]
//! counts the calls open on each connection (for the idle timeout) and wraps each response
//! body in a [`TrackedBody`] that charges its bytes to the connection's and the replica's
//! budget until the body is done.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tonic::transport::server::Connected;

use crate::{config::TransportConfig, observability::TransportCounters};

mod calls;

use calls::OpenCall;
pub use calls::{AnswerBudget, StreamFuture, StreamLayer, Streams, TrackedBody};

/// The HTTP/2 client preface (24 bytes) and the header of the SETTINGS frame that must follow
/// it (9 bytes): a connection has shaken hands once it has sent this many bytes.
const HANDSHAKE_BYTES: usize = 24 + 9;
/// After a client sent something, the idle timeout waits at least this long: a call whose
/// headers have just arrived is not yet counted as open.
const READ_GRACE: Duration = Duration::from_secs(1);

/// The state every connection of one server shares.
#[derive(Debug)]
pub struct Transport {
    config: TransportConfig,
    connections: Arc<Semaphore>,
    unsent: AtomicUsize,
    epoch: Instant,
    /// What the transport refused and closed (kept with every other counter in
    /// `observability`).
    pub counters: TransportCounters,
    /// Long-lived streams (`Health/Watch`, reflection, `StreamEvents`) open on this replica.
    open_service_calls: AtomicUsize,
    /// Connections that have not made an authenticated call, oldest first: the ones closed
    /// first when the cap is reached (entries of closed or authenticated ones are skipped).
    unauthenticated: std::sync::Mutex<std::collections::VecDeque<std::sync::Weak<Connection>>>,
}

impl Transport {
    pub fn new(config: TransportConfig) -> Arc<Self> {
        Arc::new(Self {
            connections: Arc::new(Semaphore::new(config.max_connections)),
            config,
            unsent: AtomicUsize::new(0),
            epoch: Instant::now(),
            counters: TransportCounters::default(),
            open_service_calls: AtomicUsize::new(0),
            unauthenticated: std::sync::Mutex::default(),
        })
    }

    /// Under connection pressure, the oldest connection that never made an authenticated call
    /// is closed and its place under the cap handed over; `None` when every connection has
    /// authenticated. Behind a load balancer every caller shares one peer address, so nothing
    /// here looks at addresses.
    fn make_room(&self) -> Option<OwnedSemaphorePermit> {
        let mut queue = self
            .unauthenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(weak) = queue.pop_front() {
            let Some(connection) = weak.upgrade() else {
                continue;
            };
            if connection.authenticated.load(Relaxed) {
                continue;
            }
            let permit = connection
                .permit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(permit) = permit {
                self.counters.evicted_connections.fetch_add(1, Relaxed);
                marketing_infra::warn_every!(
                    max_connections = self.config.max_connections,
                    "connection closed to make room: at MARKETING_MAX_CONNECTIONS, the oldest \
                     connection that never made an authenticated call is closed for a new one"
                );
                connection.close();
                return Some(permit);
            }
        }
        None
    }

    /// Remembers a new connection as unauthenticated, dropping entries of connections gone
    /// or authenticated when they outnumber the cap.
    fn track(&self, connection: &Arc<Connection>) {
        let mut queue = self
            .unauthenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if queue.len() >= 2 * self.config.max_connections.max(1) {
            queue.retain(|weak| {
                weak.upgrade()
                    .is_some_and(|c| !c.authenticated.load(Relaxed))
            });
        }
        queue.push_back(Arc::downgrade(connection));
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.config.max_connections - self.connections.available_permits()
    }

    /// Response bytes written to connections and not yet sent (the budget's use).
    pub fn unsent_bytes(&self) -> usize {
        self.unsent.load(Relaxed)
    }

    /// Long-lived streams open now (`Health/Watch`, reflection, `StreamEvents`).
    pub fn open_streams(&self) -> usize {
        self.open_service_calls.load(Relaxed)
    }

    /// `accepted`, with every connection past the cap closed and logged, and every accepted
    /// one guarded.
    pub fn guard<S>(self: &Arc<Self>, accepted: S) -> impl Stream<Item = io::Result<Guarded>>
    where
        S: Stream<Item = io::Result<TcpStream>>,
    {
        let transport = self.clone();
        accepted.filter_map(move |accepted| {
            let transport = transport.clone();
            async move {
                match accepted {
                    Ok(stream) => match transport
                        .connections
                        .clone()
                        .try_acquire_owned()
                        .ok()
                        .or_else(|| transport.make_room())
                    {
                        Some(permit) => Some(Ok(Guarded::new(stream, permit, transport))),
                        None => {
                            transport.counters.refused_connections.fetch_add(1, Relaxed);
                            marketing_infra::warn_every!(
                                peer = ?stream.peer_addr().ok(),
                                max_connections = transport.config.max_connections,
                                "connection refused: this replica serves MARKETING_MAX_CONNECTIONS already, all authenticated"
                            );
                            None
                        }
                    },
                    Err(err) => {
                        // Out of file descriptors, typically: the pending connection stays in
                        // the backlog, so pause instead of spinning on it.
                        marketing_infra::warn_every!(error = %err, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        None
                    }
                }
            }
        })
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn instant(&self, millis: u64) -> Instant {
        self.epoch + Duration::from_millis(millis)
    }
}

/// What one connection's calls share with its socket.
#[derive(Debug)]
struct Connection {
    transport: Arc<Transport>,
    open_calls: AtomicUsize,
    /// Milliseconds since the transport's epoch.
    last_call_end: AtomicU64,
    last_read: AtomicU64,
    unsent: AtomicUsize,
    /// Whether a call on it was admitted as a client's: then it is never closed to make room.
    authenticated: std::sync::atomic::AtomicBool,
    /// Calls refused for their credentials.
    failed_authentications: AtomicUsize,
    /// Long-lived streams (`Health/Watch`, reflection, `StreamEvents`) open on it.
    open_service_calls: AtomicUsize,
    /// Set to close the connection; its socket's next read fails.
    closing: std::sync::atomic::AtomicBool,
    waker: futures::task::AtomicWaker,
    /// Its place under the connection cap (taken when it is closed to make room for another).
    permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
}

impl Connection {
    /// When this connection, if nothing changes, has been idle too long; `None` while a call
    /// is open.
    fn idle_deadline(&self) -> Option<Instant> {
        if self.open_calls.load(Relaxed) > 0 {
            return None;
        }
        let transport = &self.transport;
        let quiet_since = transport.instant(self.last_call_end.load(Relaxed));
        let read_at = transport.instant(self.last_read.load(Relaxed));
        Some((quiet_since + transport.config.idle_timeout).max(read_at + READ_GRACE))
    }

    /// Counts a long-lived stream (`Health/Watch`, reflection, `StreamEvents`) against the
    /// replica's limit, and, `per_connection` (the open services' streams, which need no
    /// client), the connection's; `false` (nothing counted) past either.
    fn open_service_call(&self, call: &mut OpenCall, per_connection: bool) -> bool {
        let transport = &self.transport;
        let on_connection = self.open_service_calls.fetch_add(1, Relaxed) + 1;
        let on_replica = transport.open_service_calls.fetch_add(1, Relaxed) + 1;
        if (per_connection && on_connection > OPEN_CALLS_PER_CONNECTION)
            || on_replica > transport.config.max_open_service_calls
        {
            self.open_service_calls.fetch_sub(1, Relaxed);
            transport.open_service_calls.fetch_sub(1, Relaxed);
            return false;
        }
        call.count_as_open_service();
        true
    }

    fn call_started(self: &Arc<Self>) -> OpenCall {
        self.open_calls.fetch_add(1, Relaxed);
        OpenCall::new(self.clone())
    }

    /// Closes the connection: its socket's next read fails, and hyper drops it.
    fn close(&self) {
        self.closing.store(true, Relaxed);
        self.waker.wake();
    }
}

/// Streams of the open services (`Health/Watch`, reflection) one connection may hold open.
pub const OPEN_CALLS_PER_CONNECTION: usize = 4;
/// Calls a connection may have refused for their credentials before it is closed.
pub const FAILED_AUTHENTICATIONS_PER_CONNECTION: usize = 16;

impl ConnectionInfo {
    /// A call on this connection was admitted as a client's: it is never closed to make room.
    pub fn authenticated(&self) {
        self.connection.authenticated.store(true, Relaxed);
    }

    /// A call on this connection was refused for its credentials; past
    /// [`FAILED_AUTHENTICATIONS_PER_CONNECTION`] the connection is closed (its other calls
    /// fail with it), so one client's bad keys cost that client's connection only.
    pub fn failed_authentication(&self) {
        let failed = self.connection.failed_authentications.fetch_add(1, Relaxed) + 1;
        if failed == FAILED_AUTHENTICATIONS_PER_CONNECTION {
            let transport = &self.connection.transport;
            transport.counters.evicted_connections.fetch_add(1, Relaxed);
            marketing_infra::warn_every!(
                peer = ?self.remote_addr,
                failed,
                "connection closed: too many calls refused for their credentials"
            );
            self.connection.close();
        }
    }
}

/// Connection info of a guarded connection, in every request's extensions (tonic puts it
/// there).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub remote_addr: Option<SocketAddr>,
    connection: Arc<Connection>,
}

/// An accepted connection under its deadlines; dropping it frees its place under the cap.
pub struct Guarded {
    stream: TcpStream,
    info: ConnectionInfo,
    /// Bytes of the handshake still to come, and its deadline; `None` once it is done.
    handshake: Option<(usize, Pin<Box<Sleep>>)>,
    idle: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, transport: Arc<Transport>) -> Self {
        let now = Instant::now();
        let config = &transport.config;
        let handshake = Some((
            HANDSHAKE_BYTES,
            Box::pin(tokio::time::sleep_until(now + config.handshake_timeout)),
        ));
        let idle = Box::pin(tokio::time::sleep_until(now + config.idle_timeout));
        let millis = transport.millis(now);
        let connection = Arc::new(Connection {
            transport,
            open_calls: AtomicUsize::new(0),
            last_call_end: AtomicU64::new(millis),
            last_read: AtomicU64::new(millis),
            unsent: AtomicUsize::new(0),
            authenticated: std::sync::atomic::AtomicBool::new(false),
            failed_authentications: AtomicUsize::new(0),
            open_service_calls: AtomicUsize::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            waker: futures::task::AtomicWaker::new(),
            permit: std::sync::Mutex::new(Some(permit)),
        });
        connection.transport.track(&connection);
        let info = ConnectionInfo {
            remote_addr: stream.peer_addr().ok(),
            connection,
        };
        Self {
            stream,
            info,
            handshake,
            idle,
        }
    }

    /// `Ready(Err)` when a deadline has passed: the read fails and hyper closes the connection.
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let connection = &self.info.connection;
        let transport = &connection.transport;
        connection.waker.register(cx.waker());
        if connection.closing.load(Relaxed) {
            tracing::debug!(peer = ?self.info.remote_addr, "closing a connection");
            return Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the server",
            ));
        }
        if let Some((_, deadline)) = &mut self.handshake {
            if deadline.as_mut().poll(cx).is_ready() {
                transport.counters.handshake_timeouts.fetch_add(1, Relaxed);
                marketing_infra::warn_every!(
                    peer = ?self.info.remote_addr,
                    timeout = ?transport.config.handshake_timeout,
                    "connection closed: no HTTP/2 handshake within MARKETING_HANDSHAKE_TIMEOUT_MS"
                );
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP/2 handshake timed out",
                ));
            }
            return Poll::Pending;
        }
        let Some(deadline) = connection.idle_deadline() else {
            // A call is open; its end wakes the connection, which polls here again.
            return Poll::Pending;
        };
        // The deadline only moves later (calls end, bytes arrive), and this runs on every
        // quiet read: the timer is moved only when it must fire sooner, and otherwise
        // re-armed when it fires early, about once per idle timeout.
        if deadline < self.idle.deadline() {
            self.idle.as_mut().reset(deadline);
        }
        if self.idle.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                transport.counters.idle_closes.fetch_add(1, Relaxed);
                tracing::debug!(peer = ?self.info.remote_addr, "closing an idle connection");
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle timeout",
                ));
            }
            self.idle.as_mut().reset(deadline);
            // Registers the waker for the new deadline (it has not passed).
            let _ = self.idle.as_mut().poll(cx);
        }
        Poll::Pending
    }
}

impl Connected for Guarded {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    let connection = &this.info.connection;
                    let now = connection.transport.millis(Instant::now());
                    connection.last_read.store(now, Relaxed);
                }
                if let Some((remaining, _)) = &mut this.handshake {
                    *remaining = remaining.saturating_sub(read);
                    if *remaining == 0 {
                        this.handshake = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_deadlines(cx).map(Err),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The connection a request came on (behind TLS, tonic wraps its info).
pub fn connection_of<B>(request: &http::Request<B>) -> Option<&ConnectionInfo> {
    let extensions = request.extensions();
    extensions.get::<ConnectionInfo>().or_else(|| {
        extensions
            .get::<tonic::transport::server::TlsConnectInfo<ConnectionInfo>>()
            .map(tonic::transport::server::TlsConnectInfo::get_ref)
    })
}
