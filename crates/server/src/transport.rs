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
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tonic::transport::server::Connected;

use marketing_domain::MarketingError;

use crate::config::TransportConfig;

/// The HTTP/2 client preface (24 bytes) and the header of the SETTINGS frame that must follow
/// it (9 bytes): a connection has shaken hands once it has sent this many bytes.
const HANDSHAKE_BYTES: usize = 24 + 9;
/// A data frame at most this large is always sent: refusing it would save nothing, and a
/// client can read it at once within HTTP/2's initial window.
const SMALL_FRAME: usize = 64 * 1024;
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
    /// Connections refused at the cap, handshakes that timed out, idle connections closed and
    /// responses refused for the unsent-bytes budget.
    pub refused_connections: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub idle_closes: AtomicU64,
    pub refused_responses: AtomicU64,
    /// Connections closed to make room (never authenticated, at the cap) or for failing to
    /// authenticate too often, and streams of the open services refused for their limits.
    pub evicted_connections: AtomicU64,
    pub refused_open_calls: AtomicU64,
    /// Streams of the open services (`Health/Watch`, reflection) open on this replica.
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
            refused_connections: AtomicU64::new(0),
            handshake_timeouts: AtomicU64::new(0),
            idle_closes: AtomicU64::new(0),
            refused_responses: AtomicU64::new(0),
            evicted_connections: AtomicU64::new(0),
            refused_open_calls: AtomicU64::new(0),
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
                self.evicted_connections.fetch_add(1, Relaxed);
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
                            transport.refused_connections.fetch_add(1, Relaxed);
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
    /// Streams of the open services (`Health/Watch`, reflection) open on it.
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

    /// Counts a stream of an open service (`Health/Watch`, reflection) against the
    /// connection's and the replica's limits; `false` (nothing counted) past either.
    fn open_service_call(&self, call: &mut OpenCall) -> bool {
        let transport = &self.transport;
        let on_connection = self.open_service_calls.fetch_add(1, Relaxed) + 1;
        let on_replica = transport.open_service_calls.fetch_add(1, Relaxed) + 1;
        if on_connection > OPEN_CALLS_PER_CONNECTION
            || on_replica > transport.config.max_open_service_calls
        {
            self.open_service_calls.fetch_sub(1, Relaxed);
            transport.open_service_calls.fetch_sub(1, Relaxed);
            return false;
        }
        call.open_service = true;
        true
    }

    fn call_started(self: &Arc<Self>) -> OpenCall {
        self.open_calls.fetch_add(1, Relaxed);
        OpenCall {
            charge: Arc::new(Charge {
                connection: self.clone(),
                charged: AtomicUsize::new(0),
                reserved: AtomicUsize::new(0),
            }),
            open_service: false,
        }
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
            transport.evicted_connections.fetch_add(1, Relaxed);
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
                transport.handshake_timeouts.fetch_add(1, Relaxed);
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
                transport.idle_closes.fetch_add(1, Relaxed);
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

/// A call open on a connection; dropping it (when its response is done, or the call is
/// cancelled) ends the call. Its response bytes are charged to its [`Charge`].
struct OpenCall {
    charge: Arc<Charge>,
    /// A stream of an open service (`Health/Watch`, reflection), counted against their limits.
    open_service: bool,
}

impl OpenCall {
    fn connection(&self) -> &Arc<Connection> {
        &self.charge.connection
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        let connection = self.connection();
        let transport = &connection.transport;
        if self.open_service {
            connection.open_service_calls.fetch_sub(1, Relaxed);
            transport.open_service_calls.fetch_sub(1, Relaxed);
        }
        let now = transport.millis(Instant::now());
        connection.last_call_end.fetch_max(now, Relaxed);
        connection.open_calls.fetch_sub(1, Relaxed);
    }
}

/// The response bytes one call holds against its connection's and the replica's budget,
/// shared by its response body and (through the request's extensions, as [`AnswerBudget`])
/// its handler, which reserves room for a large answer before building it. Refunded when
/// both are gone.
struct Charge {
    connection: Arc<Connection>,
    /// Bytes charged to the budgets.
    charged: AtomicUsize,
    /// Of them, bytes the handler reserved that no data frame has used yet.
    reserved: AtomicUsize,
}

impl Charge {
    /// Charges `len` more bytes; `false` (and nothing charged) when the connection's or the
    /// replica's budget has no room for them (at most [`SMALL_FRAME`] bytes always pass).
    fn try_charge(&self, len: usize) -> bool {
        let connection = &self.connection;
        let transport = &connection.transport;
        let config = &transport.config;
        let on_connection = connection.unsent.fetch_add(len, Relaxed) + len;
        let on_replica = transport.unsent.fetch_add(len, Relaxed) + len;
        if len > SMALL_FRAME
            && (on_connection > config.unsent_bytes_per_connection
                || on_replica > config.unsent_bytes)
        {
            connection.unsent.fetch_sub(len, Relaxed);
            transport.unsent.fetch_sub(len, Relaxed);
            return false;
        }
        self.charged.fetch_add(len, Relaxed);
        true
    }

    /// Charges a data frame of `len` bytes, first from what was reserved for it; the rest of
    /// a reservation it does not use is refunded.
    fn charge_frame(&self, len: usize) -> bool {
        let reserved = self.reserved.swap(0, Relaxed);
        if reserved >= len {
            self.refund(reserved - len);
            true
        } else {
            self.try_charge(len - reserved)
        }
    }

    /// Counts and logs a response of `len` bytes refused for the budget.
    fn refused(&self, len: usize) {
        let connection = &self.connection;
        let transport = &connection.transport;
        transport.refused_responses.fetch_add(1, Relaxed);
        marketing_infra::warn_every!(
            bytes = len,
            connection_unsent = connection.unsent.load(Relaxed),
            replica_unsent = transport.unsent.load(Relaxed),
            "response refused: clients hold too many unread responses \
             (MARKETING_UNSENT_BYTES_PER_CONNECTION, MARKETING_UNSENT_BYTES)"
        );
    }

    fn refund(&self, len: usize) {
        let connection = &self.connection;
        connection.unsent.fetch_sub(len, Relaxed);
        connection.transport.unsent.fetch_sub(len, Relaxed);
        self.charged.fetch_sub(len, Relaxed);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let charged = *self.charged.get_mut();
        self.refund(charged);
    }
}

/// A call's room for its answer, in the request's extensions: a handler whose answer may be
/// large reserves it before doing any work, so that what clients leave unread is bounded
/// from the moment an answer is built, not only once it is sent.
#[derive(Clone)]
pub struct AnswerBudget(Arc<Charge>);

impl AnswerBudget {
    /// Reserves `len` bytes for the answer; `false` when the connection's or the replica's
    /// budget has no room for them (the call should be refused with `RESPONSE_BUFFER_FULL`).
    pub fn reserve(&self, len: usize) -> bool {
        let charge = &self.0;
        if !charge.try_charge(len) {
            charge.refused(len);
            return false;
        }
        charge.reserved.fetch_add(len, Relaxed);
        true
    }
}

/// Counts each connection's open calls and charges their responses to its budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamLayer;

impl<S> tower_layer::Layer<S> for StreamLayer {
    type Service = Streams<S>;

    fn layer(&self, inner: S) -> Streams<S> {
        Streams { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Streams<S> {
    inner: S,
}

impl<S, B, ReqBody> tower_service::Service<http::Request<ReqBody>> for Streams<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<B>>,
    B: Body<Data = Bytes> + Default + Unpin,
    B::Error: Unpin,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = StreamFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let mut call = connection_of(&request).map(|info| info.connection.call_started());
        if let Some(open) = &call {
            request
                .extensions_mut()
                .insert(AnswerBudget(open.charge.clone()));
        }
        let refused = match &mut call {
            Some(open) if crate::app::auth::is_open_stream(request.uri().path()) => {
                !open.connection().clone().open_service_call(open)
            }
            _ => false,
        };
        if refused {
            if let Some(open) = &call {
                open.connection()
                    .transport
                    .refused_open_calls
                    .fetch_add(1, Relaxed);
            }
            marketing_infra::warn_every!(
                path = request.uri().path(),
                "call refused: too many health watches and reflection streams on this connection or replica"
            );
            return StreamFuture::Refused { call };
        }
        StreamFuture::Served {
            inner: self.inner.call(request),
            call,
        }
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

pin_project_lite::pin_project! {
    /// The inner service's response, its body wrapped in a [`TrackedBody`]; or the refusal
    /// of an open-service stream past its limits.
    #[project = StreamProjection]
    pub enum StreamFuture<F> {
        Served {
            #[pin]
            inner: F,
            call: Option<OpenCall>,
        },
        Refused { call: Option<OpenCall> },
    }
}

impl<F, B, E> Future for StreamFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body<Data = Bytes> + Default + Unpin,
    B::Error: Unpin,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, call) = match self.project() {
            StreamProjection::Served { inner, call } => (ready!(inner.poll(cx))?, call.take()),
            StreamProjection::Refused { call } => (
                crate::wire::status::status_of(&MarketingError::Overloaded).into_http(),
                call.take(),
            ),
        };
        let mut response = response.map(|body| TrackedBody {
            inner: body,
            call,
            state: State::Streaming(Bytes::new()),
            first: None,
        });
        // The answer's first frame is taken (for a unary call: the whole message, encoded)
        // and charged now: hyper asks for it only once the client's window has room, and a
        // client that grants none would otherwise leave the message in memory, uncharged.
        let body = response.body_mut();
        if let Poll::Ready(frame) = body.advance(cx) {
            body.first = Some(frame);
        }
        Poll::Ready(Ok(response))
    }
}

enum State {
    /// What is left of the last large data frame, handed to hyper piece by piece.
    Streaming(Bytes),
    /// The budget refused a frame, and the refusal's trailers went out instead: the end.
    Refused,
}

/// A response body whose bytes are charged to its connection's budget while it lives.
///
/// hyper hands a data frame to h2 as soon as the stream has one byte of send capacity, and
/// h2 queues all of it however little the client reads, so a body that yielded its whole
/// message would be gone (and its charge refunded) while the message still sits in memory.
/// A large frame is therefore handed out in copied pieces of [`PIECE`] bytes, one each time
/// hyper finds capacity for the last: the body lives, and stays charged, until its message
/// has nearly all left, and what h2 queues beyond it is a few pieces per stream.
pub struct TrackedBody<B: Body> {
    inner: B,
    call: Option<OpenCall>,
    state: State,
    /// The first frame, taken when the response was ready.
    first: Option<Option<Result<Frame<Bytes>, B::Error>>>,
}

/// Bytes of a large frame handed to hyper at once.
const PIECE: usize = 16 * 1024;

impl<B> TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// The next frame for hyper: what is left of a large one, or the inner body's next,
    /// charged.
    fn advance(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let rest = match &mut self.state {
            State::Refused => return Poll::Ready(None),
            State::Streaming(rest) => rest,
        };
        if !rest.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(next_piece(rest)))));
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let Some(Ok(frame)) = frame else {
            return Poll::Ready(frame);
        };
        let Some(call) = &mut self.call else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        if !call.charge.charge_frame(data.len()) {
            call.charge.refused(data.len());
            // The data is dropped here, and the client gets the refusal instead.
            self.state = State::Refused;
            return Poll::Ready(Some(Ok(Frame::trailers(refusal_trailers()))));
        }
        if data.len() <= PIECE {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let piece = next_piece(&mut data);
        self.state = State::Streaming(data);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        match this.first.take() {
            Some(first) => Poll::Ready(first),
            None => this.advance(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.first {
            Some(Some(_)) => return false,
            Some(None) => return true,
            None => {}
        }
        match &self.state {
            State::Streaming(rest) => rest.is_empty() && self.inner.is_end_stream(),
            State::Refused => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.first.is_some() {
            return SizeHint::default();
        }
        match &self.state {
            State::Streaming(rest) if rest.is_empty() => self.inner.size_hint(),
            State::Streaming(rest) => {
                let inner = self.inner.size_hint();
                let rest = rest.len() as u64;
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(rest));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(rest));
                }
                hint
            }
            State::Refused => SizeHint::with_exact(0),
        }
    }
}

/// The next piece of `rest`, copied out so that h2 never holds the whole message through it.
fn next_piece(rest: &mut Bytes) -> Bytes {
    let piece = Bytes::copy_from_slice(&rest[..PIECE.min(rest.len())]);
    bytes::Buf::advance(rest, piece.len());
    piece
}

/// The trailers of a response refused for the unsent-bytes budget: RESOURCE_EXHAUSTED with
/// reason RESPONSE_BUFFER_FULL, retryable once the client reads what it was sent.
fn refusal_trailers() -> http::HeaderMap {
    let status = crate::wire::status::status_of(&MarketingError::ResponseBufferFull);
    let mut trailers = http::HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.insert(
            tonic::Status::GRPC_STATUS,
            http::HeaderValue::from_static("8"),
        );
    }
    trailers
}
