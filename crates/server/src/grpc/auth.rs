//! The layer in front of every service that asks the [`Authenticator`] who is calling: a
//! refused call is answered UNAUTHENTICATED or PERMISSION_DENIED before the service sees it
//! (no request body is read, no database work done); an admitted one carries its
//! [`Caller`] in the request's extensions, where the handlers check its tenants. A key this
//! replica knows is checked synchronously, without an allocation; only an unknown one waits
//! for the database. Where clients' calls are rate-limited (`client=` in
//! `MARKETING_RATE_LIMITS`), an admitted call is counted against its client's limit next.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use marketing_domain::limits::LimitedAction;
use tonic::transport::server::TlsConnectInfo;
use tracing::Instrument;

use super::{BoxFuture, take_ready};
use crate::{
    app::{
        auth::{Authenticator, Caller, CertificateBesideKey, Checked},
        limits::Limits,
    },
    error::ServerError,
    observability::Metrics,
    transport::{ConnectionInfo, connection_of},
    wire::status::status_of,
};

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>, limits: Arc<Limits>, metrics: Arc<Metrics>) -> Self {
        Self {
            auth,
            limits,
            metrics,
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            auth: self.auth.clone(),
            limits: self.limits.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Authenticator>,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
}

pin_project_lite::pin_project! {
    /// The call as the check left it: passed on, refused, or waiting for a key's lookup or
    /// its client's rate limit.
    #[project = AuthProjection]
    pub enum AuthFuture<F, B, E> {
        Admitted { #[pin] inner: F },
        Refused { response: Option<http::Response<B>> },
        Deferred { inner: BoxFuture<Result<http::Response<B>, E>> },
    }
}

impl<F, B, E> Future for AuthFuture<F, B, E>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthProjection::Admitted { inner } => inner.poll(cx),
            AuthProjection::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("polled after it answered")))
            }
            AuthProjection::Deferred { inner } => inner.as_mut().poll(cx),
        }
    }
}

impl<S, ReqBody, B> tower_service::Service<http::Request<ReqBody>> for Authenticated<S>
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
    type Future = AuthFuture<S::Future, B, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.as_bytes());
        let certificates = request
            .extensions()
            .get::<TlsConnectInfo<ConnectionInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        let certificate = certificates
            .as_deref()
            .and_then(|chain| chain.first())
            .map(|der| der.as_ref());
        // A key is what counts; a certificate beside it is only named.
        let (checked, beside) = match (header, certificate) {
            (Some(_), Some(der)) => (
                self.auth.check(request.uri().path(), header, None),
                Some(self.auth.certificate_label(der)),
            ),
            _ => (
                self.auth.check(request.uri().path(), header, certificate),
                None,
            ),
        };
        let connection = connection_of(&request).cloned();
        note(
            &self.metrics,
            connection.as_ref(),
            &checked,
            request.uri().path(),
        );
        let limited = self.limits.limits(LimitedAction::Client);
        match checked {
            Checked::Refused(refused) => AuthFuture::Refused {
                response: Some(status_of(&refused).into_http()),
            },
            Checked::Admitted(caller) if beside.is_none() && !(limited && caller.is_some()) => {
                let mut request = request;
                if let Some(caller) = caller {
                    request.extensions_mut().insert::<Caller>(caller);
                }
                AuthFuture::Admitted {
                    inner: self.inner.call(request),
                }
            }
            checked => {
                let inner = take_ready(&mut self.inner);
                let span = beside.as_ref().map(|beside| {
                    tracing::info_span!(
                        "call",
                        client = tracing::field::Empty,
                        certificate = %beside.0,
                    )
                });
                let served = serve_checked(
                    Checks {
                        auth: self.auth.clone(),
                        limits: self.limits.clone(),
                        metrics: self.metrics.clone(),
                        connection,
                        beside,
                    },
                    checked,
                    inner,
                    request,
                );
                let inner: BoxFuture<_> = match span {
                    Some(span) => Box::pin(served.instrument(span)),
                    None => Box::pin(served),
                };
                AuthFuture::Deferred { inner }
            }
        }
    }
}

/// Tells the connection what its call of `path` was found to be: a client's call (any call of
/// our services when auth is off) marks it authenticated (never closed to make room), a
/// refusal for credentials counts against it (too many close it).
fn note(metrics: &Metrics, connection: Option<&ConnectionInfo>, checked: &Checked, path: &str) {
    if let Checked::Refused(_) = checked {
        metrics.record_auth_refusal();
    }
    let Some(connection) = connection else {
        return;
    };
    match checked {
        Checked::Admitted(Some(_)) => connection.authenticated(),
        Checked::Admitted(None) if !crate::app::auth::is_open(path) => {
            connection.authenticated();
        }
        Checked::Refused(ServerError::Unauthenticated) => connection.failed_authentication(),
        _ => {}
    }
}

/// What serving a call past the synchronous check needs.
struct Checks {
    auth: Arc<Authenticator>,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    connection: Option<ConnectionInfo>,
    /// The certificate presented beside the call's key.
    beside: Option<CertificateBesideKey>,
}

/// Serves a call the synchronous check admitted, or could not judge (its credential is looked
/// up first): as its caller, once its client's rate limit admits it too.
async fn serve_checked<S, ReqBody, B>(
    checks: Checks,
    checked: Checked,
    mut inner: S,
    mut request: http::Request<ReqBody>,
) -> Result<http::Response<B>, S::Error>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<B>>,
    B: Default,
{
    let caller = match checked {
        Checked::Admitted(caller) => caller,
        Checked::Refused(refused) => return Ok(status_of(&refused).into_http()),
        Checked::Unknown(credential) => {
            let path = request.uri().path().to_owned();
            let checked = checks.auth.look_up(credential, &path).await;
            note(&checks.metrics, checks.connection.as_ref(), &checked, &path);
            match checked {
                Checked::Admitted(caller) => caller,
                Checked::Refused(refused) => return Ok(status_of(&refused).into_http()),
                Checked::Unknown(_) => {
                    checks.metrics.record_auth_refusal();
                    return Ok(status_of(&ServerError::Unauthenticated).into_http());
                }
            }
        }
    };
    if let Some(caller) = caller {
        tracing::Span::current().record("client", &*caller.name);
        if let Err(refused) = checks
            .limits
            .admit(LimitedAction::Client, &caller.name)
            .await
        {
            return Ok(status_of(&refused).into_http());
        }
        request.extensions_mut().insert::<Caller>(caller);
        if let Some(beside) = checks.beside {
            request.extensions_mut().insert(beside);
        }
    }
    inner.call(request).await
}
