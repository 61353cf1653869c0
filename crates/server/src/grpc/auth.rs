//! The layer in front of every service that asks the [`Authenticator`] who is calling: a
//! refused call is answered UNAUTHENTICATED or PERMISSION_DENIED before the service sees it
//! (no request body is read, no database work done); an admitted one carries its
//! [`Caller`] in the request's extensions, where the handlers check its tenants.

use std::{future::Future, pin::Pin, sync::Arc};

use crate::{
    app::auth::{Authenticator, Caller},
    wire::status::status_of,
};

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, B> tower_service::Service<http::Request<ReqBody>> for Authenticated<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    B: Default + Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<B>, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The ready service answers this call; a clone waits for the next (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|value| value.as_bytes());
            match auth.authenticate(request.uri().path(), header).await {
                Ok(caller) => {
                    if let Some(caller) = caller {
                        request.extensions_mut().insert::<Caller>(caller);
                    }
                    inner.call(request).await
                }
                Err(refused) => Ok(status_of(&refused).into_http()),
            }
        })
    }
}
