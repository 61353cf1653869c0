//! The calls of a connection: each one counted while open (for the idle timeout), and its
//! response body charged to the connection's and the replica's budget for unread bytes
//! ([`TrackedBody`]), from the room its handler reserves before building a large answer
//! ([`AnswerBudget`]) to the last piece hyper takes.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll, ready},
};

use crate::error::ServerError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::{Connection, connection_of};

/// A data frame at most this large is always sent: refusing it would save nothing, and a
/// client can read it at once within HTTP/2's initial window.
const SMALL_FRAME: usize = 64 * 1024;

/// A call open on a connection; dropping it (when its response is done, or the call is
/// cancelled) ends the call. Its response bytes are charged to its [`Charge`].
pub(super) struct OpenCall {
    charge: Arc<Charge>,
    /// A long-lived stream (`Health/Watch`, reflection, `StreamEvents`), counted against their limits.
    open_service: bool,
}

impl OpenCall {
    /// A call started on `connection` (which counted it), nothing charged yet.
    pub(super) fn new(connection: Arc<Connection>) -> Self {
        Self {
            charge: Arc::new(Charge {
                connection,
                charged: AtomicUsize::new(0),
                reserved: AtomicUsize::new(0),
            }),
            open_service: false,
        }
    }

    /// The call is a stream of an open service, counted against their limits until it ends.
    pub(super) fn count_as_open_service(&mut self) {
        self.open_service = true;
    }

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

    /// Refunds what data frames were charged (the reservations no frame used stay).
    fn release_sent(&self) {
        let sent = self
            .charged
            .load(Relaxed)
            .saturating_sub(self.reserved.load(Relaxed));
        if sent > 0 {
            self.refund(sent);
        }
    }

    /// Counts and logs a response of `len` bytes refused for the budget.
    fn refused(&self, len: usize) {
        let connection = &self.connection;
        let transport = &connection.transport;
        transport.counters.refused_responses.fetch_add(1, Relaxed);
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
            Some(open) if crate::app::auth::is_long_stream(request.uri().path()) => {
                // Anyone may open the open services' streams: a few per connection. An event
                // stream needs a client, whose streams are bounded per client instead.
                let per_connection = crate::app::auth::is_open(request.uri().path());
                !open
                    .connection()
                    .clone()
                    .open_service_call(open, per_connection)
            }
            _ => false,
        };
        if refused {
            if let Some(open) = &call {
                open.connection()
                    .transport
                    .counters
                    .refused_open_calls
                    .fetch_add(1, Relaxed);
            }
            marketing_infra::warn_every!(
                path = request.uri().path(),
                "call refused: too many long-lived streams (health watches, reflection, event streams) on this connection or replica"
            );
            return StreamFuture::Refused { call };
        }
        StreamFuture::Served {
            inner: self.inner.call(request),
            call,
        }
    }
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
                crate::wire::status::status_of(&ServerError::Overloaded).into_http(),
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
        // hyper asks for the next frame once the last one's pieces have left (it had
        // capacity again): their bytes are no longer held, so a long stream (StreamEvents,
        // Health/Watch) is charged for its last frame only, not for all it ever sent.
        if let Some(call) = &self.call {
            call.charge.release_sent();
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
    let status = crate::wire::status::status_of(&ServerError::ResponseBufferFull);
    let mut trailers = http::HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.insert(
            tonic::Status::GRPC_STATUS,
            http::HeaderValue::from_static("8"),
        );
    }
    trailers
}
