//! What an operator of a host watches: the runtime's metrics in the
//! Prometheus text format (`/metrics`), liveness (`/healthz`) and readiness
//! (`/readyz`: the store answers and the host's workers run).
//!
//! Metrics count the work of every account a process serves, so they are
//! served on an address of their own (`--metrics-addr`), for the operator's
//! scraper, never on the address tenants reach. `/healthz` and `/readyz`
//! say nothing about anyone and are served on both.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use thinklio_core::Runtime;

/// The process's Prometheus recorder, installed as the global `metrics`
/// recorder on first use (a process has one; every host in it shares it).
/// Durations get buckets from 5 ms to 2 minutes.
pub fn prometheus() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_owned()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        120.0,
                    ],
                )
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
            // Descriptions given before the recorder existed went nowhere.
            thinklio_core::telemetry::describe();
            Ok(handle)
        })
        .clone()
}

/// Whether each of a host's background workers still runs, by name.
pub type Workers = Arc<dyn Fn() -> Vec<(&'static str, bool)> + Send + Sync>;

/// What the operator routes read.
#[derive(Clone)]
pub struct Ops {
    runtime: Runtime,
    workers: Workers,
    metrics: Option<PrometheusHandle>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

impl Ops {
    /// Health and readiness of `runtime` and the workers `workers` reports.
    pub fn new(runtime: Runtime, workers: Workers) -> Self {
        Self {
            runtime,
            workers,
            metrics: None,
        }
    }

    /// Also serves `/metrics` from `handle`.
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// `/healthz`, `/readyz` and, with metrics, `/metrics`.
    pub fn router(self) -> Router {
        let ops = Arc::new(self);
        let mut router = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get({
                    let ops = Arc::clone(&ops);
                    move || {
                        let ops = Arc::clone(&ops);
                        async move { ops.ready().await }
                    }
                }),
            );
        if ops.metrics.is_some() {
            router = router.route(
                "/metrics",
                get(move || {
                    let ops = Arc::clone(&ops);
                    async move { ops.scrape().await }
                }),
            );
        }
        router
    }

    /// `200` when the store answers (its backlog is read: reachable, its
    /// tables as this version writes them) and every worker runs; `503`
    /// naming what fails otherwise.
    async fn ready(&self) -> Response {
        let store = match self.runtime.sample_backlog().await {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("unavailable: {}", e.code()),
        };
        let workers: serde_json::Map<String, serde_json::Value> = (self.workers)()
            .into_iter()
            .map(|(name, running)| {
                (
                    name.to_owned(),
                    json!(if running { "running" } else { "stopped" }),
                )
            })
            .collect();
        let ready = store == "ok" && workers.values().all(|v| v == "running");
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            status,
            axum::Json(json!({ "ready": ready, "store": store, "workers": workers })),
        )
            .into_response()
    }

    /// The metrics, the store's backlog sampled first.
    async fn scrape(&self) -> Response {
        if let Err(e) = self.runtime.sample_backlog().await {
            // The counters are still worth reading; the gauges keep their
            // last sample.
            tracing::warn!(
                code = e.code().as_str(),
                "cannot sample the store's backlog"
            );
        }
        let text = self
            .metrics
            .as_ref()
            .map(|m| m.render())
            .unwrap_or_default();
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response()
    }
}

/// Serves `ops`'s routes on `listener` until `shutdown` resolves.
pub async fn serve(
    ops: Ops,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, ops.router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what a service manager or a
/// container runtime sends to stop a process).
pub async fn stop_signal() -> Result<(), String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string()),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())
    }
}

/// The retention worker a host's `--retain-days` asks for: finished work
/// older than `days` pruned at start and hourly, usage rolled up after
/// the default 90 days (or `days`, if longer); none when left out.
pub fn retention(runtime: &Runtime, days: Option<u32>) -> Option<thinklio_core::RetentionWorker> {
    let days = days?;
    let keep = std::time::Duration::from_secs(u64::from(days) * 86_400);
    let policy = thinklio_core::RetentionPolicy::keep_finished(keep);
    let usage = policy.keep_usage_detail.max(keep);
    Some(runtime.spawn_retention_worker(policy.usage_detail(usage)))
}
