//! A bound on the calls this replica works on at once (`MARKETING_MAX_CALLS`). Past it, a call
//! waits at most `MARKETING_CALL_QUEUE_TIMEOUT_MS` for a turn and is then refused
//! UNAVAILABLE / OVERLOADED (retryable: another replica, or a little later, may serve it),
//! instead of queueing without limit. Health and reflection are never shed. A turn is held
//! until the call's response is ready.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{BoxFuture, take_ready};
use crate::{error::ServerError, observability::Metrics, wire::status::status_of};

/// The services whose calls are bounded.
const BOUNDED: &str = "/marketing.v1.";

#[derive(Clone)]
pub struct OverloadLayer {
    turns: Arc<Semaphore>,
    max_calls: usize,
    wait: Duration,
    metrics: Arc<Metrics>,
}

impl OverloadLayer {
    pub fn new(max_calls: usize, wait: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            turns: Arc::new(Semaphore::new(max_calls)),
            max_calls,
            wait,
            metrics,
        }
    }

    /// Calls of the marketing services being served now (each holds a turn).
    pub fn in_progress(&self) -> usize {
        self.max_calls
            .saturating_sub(self.turns.available_permits())
    }
}

impl<S> tower_layer::Layer<S> for OverloadLayer {
    type Service = Bounded<S>;

    fn layer(&self, inner: S) -> Bounded<S> {
        Bounded {
            inner,
            turns: self.turns.clone(),
            wait: self.wait,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Bounded<S> {
    inner: S,
    turns: Arc<Semaphore>,
    wait: Duration,
    metrics: Arc<Metrics>,
}

pin_project_lite::pin_project! {
    /// The call with its turn, or waiting for one.
    #[project = BoundedProjection]
    pub enum BoundedFuture<F, B, E> {
        Served { #[pin] inner: F, turn: Option<OwnedSemaphorePermit> },
        Waiting { inner: BoxFuture<Result<http::Response<B>, E>> },
    }
}

impl<F, B, E> Future for BoundedFuture<F, B, E>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BoundedProjection::Served { inner, turn } => {
                let answered = std::task::ready!(inner.poll(cx));
                turn.take();
                Poll::Ready(answered)
            }
            BoundedProjection::Waiting { inner } => inner.as_mut().poll(cx),
        }
    }
}

impl<S, ReqBody, B> tower_service::Service<http::Request<ReqBody>> for Bounded<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Send,
    ReqBody: Send + 'static,
    B: Default + Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = BoundedFuture<S::Future, B, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if !request.uri().path().starts_with(BOUNDED) {
            return BoundedFuture::Served {
                inner: self.inner.call(request),
                turn: None,
            };
        }
        if let Ok(turn) = self.turns.clone().try_acquire_owned() {
            return BoundedFuture::Served {
                inner: self.inner.call(request),
                turn: Some(turn),
            };
        }
        let mut inner = take_ready(&mut self.inner);
        let (turns, wait, metrics) = (self.turns.clone(), self.wait, self.metrics.clone());
        BoundedFuture::Waiting {
            inner: Box::pin(async move {
                match tokio::time::timeout(wait, turns.acquire_owned()).await {
                    Ok(Ok(turn)) => {
                        let answered = inner.call(request).await;
                        drop(turn);
                        answered
                    }
                    _ => {
                        metrics.record_overload_shed();
                        marketing_infra::warn_every!(
                            waited_ms = wait.as_millis() as u64,
                            "call refused: the replica works on as many calls as it may"
                        );
                        Ok(status_of(&ServerError::Overloaded).into_http())
                    }
                }
            }),
        }
    }
}
