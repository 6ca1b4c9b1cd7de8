//! The HTTP endpoint (axum on tokio): `/metrics` in the Prometheus text format, `/health`
//! (liveness), `/ready` (503 unless the primary answers as a primary). With a token, `/metrics`
//! and `/ready` want `Authorization: Bearer <token>` (or HTTP Basic with the token as the
//! password, which is what a browser can send); `/health` stays open for liveness probes.

use std::{
    collections::VecDeque, future::Future, net::SocketAddr, pin::Pin, sync::Arc, task::Poll,
    time::Instant,
};

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use serde_json::json;

use crate::{Error, Exporter, Result};

#[derive(Clone)]
struct AppState {
    exporter: Arc<Exporter>,
    token: Option<Arc<str>>,
    started: Instant,
}

/// The routes, for services that mount them in their own axum app.
pub fn router(exporter: Arc<Exporter>, token: Option<String>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(AppState {
            exporter,
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
            started: Instant::now(),
        })
}

/// Binds `addr` and serves until `shutdown` completes. A busy port is an error that says so.
pub async fn serve(
    addr: SocketAddr,
    exporter: Arc<Exporter>,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = bind(addr).await?;
    serve_on(listener, exporter, token, shutdown).await
}

/// Binds `addr`, with an error that names the address and the fix.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| {
        let context = if source.kind() == std::io::ErrorKind::AddrInUse {
            format!("{addr} is already in use (another pgops health or postgres_exporter?); pick another with --listen")
        } else {
            format!("binding {addr}")
        };
        Error::Io { context, source }
    })
}

/// Serves on a bound listener until `shutdown` completes.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    exporter: Arc<Exporter>,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(listener, router(exporter, token), shutdown).await
}

/// Serves `app` (the [`router`], with whatever routes a caller merged into it) on a bound
/// listener until `shutdown` completes.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Io {
            context: "serving HTTP".into(),
            source,
        })
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    refuse_without_token(state.token.as_deref(), headers)
}

/// The token rule of every route but `/health`: with a token set, a request must carry it as
/// `Authorization: Bearer <token>`, or as the password of HTTP Basic (any user name), which is
/// what a browser sends after asking. `Some(401 response)` refuses the request; the response
/// challenges both ways, so a browser asks for the token. Routes merged into the [`router`]
/// (an operator page) use this to refuse exactly where `/metrics` refuses.
pub fn refuse_without_token(token: Option<&str>, headers: &HeaderMap) -> Option<Response> {
    use base64::Engine as _;
    let token = token.filter(|t| !t.is_empty())?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let presented = if let Some(bearer) = given.strip_prefix("Bearer ") {
        bearer.as_bytes().to_vec()
    } else if let Some(basic) = given.strip_prefix("Basic ") {
        base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|pair| {
                let colon = pair.iter().position(|b| *b == b':')?;
                Some(pair[colon + 1..].to_vec())
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if same(&presented, token.as_bytes()) {
        return None;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "a bearer token is required: Authorization: Bearer <PGOPS_METRICS_TOKEN> \
         (or HTTP Basic with the token as the password)\n",
    )
        .into_response();
    let challenges = response.headers_mut();
    challenges.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    challenges.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"pgops\", charset=\"UTF-8\""),
    );
    Some(response)
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(denied) = authorized(&state, &headers) {
        return denied;
    }
    let scrape = state.exporter.scrape().await;
    // The scrape (megabytes with a few thousand tables) is sent from where it lies, shared
    // with concurrent requests and the cache; the process's own metrics follow it.
    let mut chunks: VecDeque<Bytes> = scrape
        .chunks
        .iter()
        .map(|chunk| Bytes::from_owner(Text(chunk.clone())))
        .collect();
    chunks.push_back(Bytes::from(state.exporter.facade_text()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Body::new(Chunks(chunks)),
    )
        .into_response()
}

/// A piece of a scrape's text as bytes of a response, without a copy.
struct Text(Arc<str>);

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A response body of a few chunks whose length is known, so it goes out with a
/// `Content-Length` rather than chunked.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

async fn health(State(state): State<AppState>) -> Response {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
    }))
    .into_response()
}

async fn ready(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(denied) = authorized(&state, &headers) {
        return denied;
    }
    let readiness = state.exporter.readiness().await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn the_token_as_bearer_or_as_the_basic_password() {
        use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        let refused = |headers: &HeaderMap| super::refuse_without_token(Some("s3cret"), headers);
        assert!(refused(&with("Bearer s3cret")).is_none());
        // "anyone:s3cret" and ":s3cret"
        assert!(refused(&with("Basic YW55b25lOnMzY3JldA==")).is_none());
        assert!(refused(&with("Basic OnMzY3JldA==")).is_none());
        for wrong in [
            "Bearer s3creT",
            "Basic czNjcmV0",
            "Basic !!!",
            "s3cret",
            "Basic YW55b25lOnMzY3JldDI=",
        ] {
            let denied = refused(&with(wrong)).expect(wrong);
            assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
            let challenges: Vec<_> = denied
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            assert_eq!(challenges.len(), 2, "{challenges:?}");
            assert!(challenges[1].starts_with("Basic realm="));
        }
        assert!(refused(&HeaderMap::new()).is_some());
        // No token: open.
        assert!(super::refuse_without_token(None, &HeaderMap::new()).is_none());
        assert!(super::refuse_without_token(Some(""), &HeaderMap::new()).is_none());
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"", b"x"));
    }
}
