//! `--metrics-addr`: the worker's `/metrics` and `/healthz`. Only the per-step metrics a
//! worker records are exported, not the controller's (which would read as a controller that
//! never reconciled).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// The metric families a worker exports.
pub const WORKER_METRICS: [&str; 3] = [
    "anamo_task_duration_seconds",
    "anamo_claim_conflicts_total",
    "anamo_worker_spot_notices_total",
];

/// Binds `addr` and serves until the returned task is aborted. Returns the bound address.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(metrics));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "worker metrics server failed");
        }
    });
    Ok((local, task))
}

async fn render(State(m): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render_only(&WORKER_METRICS),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}
