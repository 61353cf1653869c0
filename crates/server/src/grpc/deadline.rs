//! Every RPC honours the client's deadline (`grpc-timeout`), the same way: [`answer_by`] is
//! when a handler must have answered (capped by the server's own limit for the RPC), and
//! [`DeadlineLayer`] answers DEADLINE_EXCEEDED (with its `ErrorInfo`) for any call still
//! running then, dropping its work: a transaction in progress rolls back; a command already
//! in a batch is served by the batch, and a retry with the same `request_id` returns it.
//!
//! Both act at 80% of the client's timeout (at most 50 ms before it): tonic itself cancels
//! the call when the timeout passes (CANCELLED, no details), and the client gives up then
//! too, so the answer must leave before.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use marketing_domain::MarketingError;
use tokio::time::{Instant, Timeout};
use tonic::metadata::MetadataMap;

use crate::wire::status::status_of;

/// When a call must be answered: the client's deadline, or `limit` from now if that is
/// sooner (or the client set none).
pub fn answer_by(metadata: &MetadataMap, limit: Duration) -> Instant {
    let client = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(answer_within);
    Instant::now() + client.map_or(limit, |client| client.min(limit))
}

/// How long the server may take for a call whose client waits `timeout`: a fifth of it, at
/// most 50 ms, is left for the answer to travel (and for a busy machine's timers: with a
/// tenth, a 50 ms call's answer sometimes reached the client after it had given up).
fn answer_within(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 5).min(Duration::from_millis(50)))
}

/// `grpc-timeout` is digits and a unit: H, M, S, m (ms), u (µs), n (ns).
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Answers DEADLINE_EXCEEDED for a call still running at its client's deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower_layer::Layer<S> for DeadlineLayer {
    type Service = Deadlines<S>;

    fn layer(&self, inner: S) -> Deadlines<S> {
        Deadlines { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadlines<S> {
    inner: S,
}

impl<S, ReqBody, B> tower_service::Service<http::Request<ReqBody>> for Deadlines<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<B>>,
    B: Default,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        let inner = self.inner.call(request);
        match timeout {
            None => DeadlineFuture::Unbounded { inner },
            Some(timeout) => DeadlineFuture::Bounded {
                inner: tokio::time::timeout(answer_within(timeout), inner),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner call, raced against its client's deadline when it has one.
    #[project = DeadlineProjection]
    pub enum DeadlineFuture<F> {
        Unbounded { #[pin] inner: F },
        Bounded { #[pin] inner: Timeout<F> },
    }
}

impl<F, B, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DeadlineProjection::Unbounded { inner } => inner.poll(cx),
            DeadlineProjection::Bounded { inner } => Poll::Ready(match ready!(inner.poll(cx)) {
                Ok(answered) => answered,
                Err(_) => Ok(status_of(&MarketingError::DeadlineExceeded).into_http()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("xS"), None);
    }

    #[test]
    fn the_answer_leaves_before_the_client_gives_up() {
        assert_eq!(
            answer_within(Duration::from_millis(50)),
            Duration::from_millis(40)
        );
        assert_eq!(
            answer_within(Duration::from_secs(10)),
            Duration::from_millis(9950)
        );
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", "100m".parse().expect("ascii"));
        let soon = answer_by(&metadata, Duration::from_secs(10));
        assert!(soon <= Instant::now() + Duration::from_millis(80));
        let capped = answer_by(&MetadataMap::new(), Duration::from_millis(20));
        assert!(capped <= Instant::now() + Duration::from_millis(20));
    }
}
