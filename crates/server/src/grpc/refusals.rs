//! Refusals tonic makes before a handler runs, given the service's shape (an `ErrorInfo`
//! reason on every error). tonic answers them without details, and our own answers always
//! carry details, so an answer without them is tonic's:
//! - a request message over `MARKETING_MAX_REQUEST_BYTES`, refused from its length prefix
//!   before it is read, as OUT_OF_RANGE: RESOURCE_EXHAUSTED, reason `REQUEST_TOO_LARGE`, with
//!   the limit;
//! - a request whose framing or bytes are broken (a compressed-flag without `grpc-encoding`,
//!   a flag that is neither 0 nor 1, a length prefix longer than the body, bytes after the
//!   message that are not a whole message, no message, bytes that do not decode as the
//!   request message): tonic says INTERNAL, but it is the client's mistake: INVALID_ARGUMENT,
//!   reason `MALFORMED_REQUEST`, with tonic's description as `problem`. (An unknown
//!   `grpc-encoding` stays tonic's UNIMPLEMENTED.)

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use crate::{error::ServerError, wire::status::status_of};

#[derive(Debug, Clone, Copy)]
pub struct RefusalsLayer {
    limit: usize,
}

impl RefusalsLayer {
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> tower_layer::Layer<S> for RefusalsLayer {
    type Service = Refusals<S>;

    fn layer(&self, inner: S) -> Refusals<S> {
        Refusals {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Refusals<S> {
    inner: S,
    limit: usize,
}

impl<S, ReqBody, B> tower_service::Service<http::Request<ReqBody>> for Refusals<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<B>>,
    B: Default,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = RefusalsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        RefusalsFuture {
            inner: self.inner.call(request),
            limit: self.limit,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct RefusalsFuture<F> {
        #[pin]
        inner: F,
        limit: usize,
    }
}

impl<F, B, E> Future for RefusalsFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = ready!(this.inner.poll(cx))?;
        let headers = answered.headers();
        // Trailers-only answers without details: tonic's own.
        if headers.contains_key("grpc-status-details-bin") {
            return Poll::Ready(Ok(answered));
        }
        let refused = match tonic::Status::from_header_map(headers) {
            Some(status) if status.code() == tonic::Code::OutOfRange => {
                marketing_infra::warn_every!(
                    limit = *this.limit,
                    "call refused: request message too large"
                );
                ServerError::RequestTooLarge { limit: *this.limit }
            }
            Some(status) if status.code() == tonic::Code::Internal => {
                marketing_infra::warn_every!(
                    problem = status.message(),
                    "call refused: malformed request"
                );
                ServerError::MalformedRequest {
                    problem: status.message().to_owned(),
                }
            }
            _ => return Poll::Ready(Ok(answered)),
        };
        Poll::Ready(Ok(status_of(&refused).into_http()))
    }
}
