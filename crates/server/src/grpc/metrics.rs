//! Every call counted and timed (`grpc_server_started_total`, `grpc_server_handled_total`,
//! `grpc_server_handling_seconds`, see `observability::RpcMetrics`): the outermost layer, so
//! calls refused by the other layers (overload, auth, malformed requests) count too. A call is
//! handled when its answer ends: the status of a trailers-only answer (an error) is in its
//! headers, else in the trailers that end its body; a body dropped before its trailers (the
//! client went away) counts as `Canceled`.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;

use crate::observability::{MethodSeries, RpcMetrics};

#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<RpcMetrics>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: Arc<RpcMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

impl<S, ReqBody, B> tower_service::Service<http::Request<ReqBody>> for Metered<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<B>>,
{
    type Response = http::Response<MeteredBody<B>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let series = self.metrics.method(request.uri().path());
        series.started();
        MeteredFuture {
            inner: self.inner.call(request),
            call: Some(Call {
                series: Some(series),
                started: Instant::now(),
                code: None,
            }),
        }
    }
}

/// A call until it is counted as handled: when it ends, or, dropped before, as `code` (or
/// `Canceled` when no status was seen).
struct Call {
    series: Option<Arc<MethodSeries>>,
    started: Instant,
    code: Option<Code>,
}

impl Call {
    fn end(&mut self, code: Code) {
        self.code = Some(code);
        if let Some(series) = self.series.take() {
            series.handled(code, self.started.elapsed());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.end(self.code.unwrap_or(Code::Cancelled));
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

pin_project_lite::pin_project! {
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<MeteredBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match answered {
            Ok(response) => {
                // A trailers-only answer carries its status in the headers.
                if let (Some(call), Some(code)) = (call.as_mut(), status_in(response.headers())) {
                    call.code = Some(code);
                }
                Ok(response.map(|inner| MeteredBody { inner, call }))
            }
            Err(err) => {
                if let Some(mut call) = call {
                    call.end(Code::Internal);
                }
                Err(err)
            }
        })
    }
}

pin_project_lite::pin_project! {
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(code) = frame.trailers_ref().and_then(status_in) {
                        call.end(code);
                    }
                }
                Some(Err(_)) => call.end(Code::Internal),
                // Ended without trailers: the status of the headers, if any.
                None => call.end(call.code.unwrap_or(Code::Unknown)),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
