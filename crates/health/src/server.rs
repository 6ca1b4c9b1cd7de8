//! The HTTP endpoint (axum on tokio): `/metrics` in the Prometheus text format, `/health`
//! (liveness), `/ready` (503 unless the primary answers as a primary). With a token, `/metrics`
//! and `/ready` want `Authorization: Bearer <token>`; `/health` stays open for liveness probes.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
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
    axum::serve(listener, router(exporter, token))
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
    let token = state.token.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same(given.as_bytes(), token.as_bytes()) {
        return None;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "a bearer token is required: Authorization: Bearer <PGOPS_METRICS_TOKEN>\n",
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(response)
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(denied) = authorized(&state, &headers) {
        return denied;
    }
    let scrape = state.exporter.scrape().await;
    let mut body = String::with_capacity(scrape.body.len() + 4096);
    body.push_str(&scrape.body);
    body.push_str(&state.exporter.facade_text());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
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
    fn token_comparison() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"", b"x"));
    }
}
