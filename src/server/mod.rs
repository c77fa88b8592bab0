//! The controller's HTTP endpoints: `/` (the status page), `/metrics`, `/healthz`, `/readyz`,
//! `/api/status`, `/api/tasks/{step}/{id}/log` (a task's log, [`task_log`]; link to it with
//! [`log_href`]).

pub mod status_page;
mod status_samples;
pub mod task_log;

pub use task_log::{log_href, TaskLogs};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::controller::status::{ControllerStatus, Role, SAMPLES_SHOWN};
use crate::controller::SharedStatus;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub status: SharedStatus,
    pub metrics: Arc<Metrics>,
    /// What `/api/tasks/{step}/{id}/log` reads.
    pub logs: TaskLogs,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/status", get(api_status))
        .route("/api/tasks/{step}/{id}/log", get(task_log::task_log))
        .with_state(state)
}

/// Binds `addr` and serves until `shutdown` resolves. Returns the bound address (port 0 picks
/// a free one) and the server task.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((local, task))
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once manifests are loaded, the store answered, and the role is known.
async fn readyz(State(s): State<AppState>) -> Response {
    let st = s.status.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut problems = Vec::new();
    if !st.manifests_loaded {
        problems.push("manifests not loaded yet");
    }
    if st.role == Role::Starting {
        problems.push("leader/follower state not known yet");
    }
    if st.role == Role::Leader && !st.store_reachable {
        problems.push("store not reachable");
    }
    if problems.is_empty() {
        (
            StatusCode::OK,
            format!("ready ({:?})\n", st.role).to_lowercase(),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

/// The search of the page's per-sample view and of `/api/status`'s `samples`: `?sample=NA12`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SampleSearch {
    #[serde(default)]
    pub sample: String,
}

/// The status page, rendered from the same status as `/api/status`.
async fn index(State(s): State<AppState>, Query(q): Query<SampleSearch>) -> Response {
    let st = s.status.read().unwrap_or_else(|p| p.into_inner()).clone();
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(status_page::render_search(&st, now, &q.sample)),
    )
        .into_response()
}

/// `/api/status`: the status, with `samples` the first [`SAMPLES_SHOWN`] samples containing
/// `query` (the page's per-sample view).
pub fn api_document(st: &ControllerStatus, query: &str) -> serde_json::Value {
    let mut doc = serde_json::to_value(st).unwrap_or_default();
    if let Some(map) = doc.as_object_mut() {
        let samples = serde_json::to_value(st.samples.view(query, SAMPLES_SHOWN));
        map.insert("samples".into(), samples.unwrap_or_default());
    }
    doc
}

async fn api_status(State(s): State<AppState>, Query(q): Query<SampleSearch>) -> Response {
    let st = s.status.read().unwrap_or_else(|p| p.into_inner()).clone();
    Json(api_document(&st, &q.sample)).into_response()
}
