//! A request message over `MARKETING_MAX_REQUEST_BYTES` is refused by tonic from its length
//! prefix, before the message is read, as OUT_OF_RANGE without details. Our services never
//! answer OUT_OF_RANGE themselves, so this layer gives that answer the service's shape:
//! RESOURCE_EXHAUSTED with `ErrorInfo` reason `REQUEST_TOO_LARGE` and the limit.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use marketing_domain::MarketingError;

use crate::wire::status::status_of;

/// tonic's code for a message over the decoding limit.
const OUT_OF_RANGE: &[u8] = b"11";

#[derive(Debug, Clone, Copy)]
pub struct OversizedLayer {
    limit: usize,
}

impl OversizedLayer {
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> tower_layer::Layer<S> for OversizedLayer {
    type Service = Oversized<S>;

    fn layer(&self, inner: S) -> Oversized<S> {
        Oversized {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Oversized<S> {
    inner: S,
    limit: usize,
}

impl<S, ReqBody, B> tower_service::Service<http::Request<ReqBody>> for Oversized<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<B>>,
    B: Default,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = OversizedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        OversizedFuture {
            inner: self.inner.call(request),
            limit: self.limit,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct OversizedFuture<F> {
        #[pin]
        inner: F,
        limit: usize,
    }
}

impl<F, B, E> Future for OversizedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = ready!(this.inner.poll(cx))?;
        let too_large = answered
            .headers()
            .get("grpc-status")
            .is_some_and(|code| code.as_bytes() == OUT_OF_RANGE);
        Poll::Ready(Ok(if too_large {
            marketing_infra::warn_every!(
                limit = *this.limit,
                "call refused: request message too large"
            );
            status_of(&MarketingError::RequestTooLarge { limit: *this.limit }).into_http()
        } else {
            answered
        }))
    }
}
