//! Thin hosts of Thinklio live in this package's `examples` (see
//! `quickstart/main.rs`). The library target exists to compile and test the
//! workspace README's embedding example as a doc test.
#![doc = include_str!("../../README.md")]

pub mod http;
pub mod memory;

/// Who can do what through each surface, and what is defended
/// (`docs/security.md`, compiled and run as doc tests).
#[doc = include_str!("../../docs/security.md")]
pub mod security {}
pub mod ops;

/// Running Thinklio in production: metrics, health, alerts, the runbook
/// (`docs/operations.md`, compiled and run as doc tests).
#[doc = include_str!("../../docs/operations.md")]
pub mod operations_guide {}
pub mod telegram;
#[cfg(feature = "otlp")]
pub mod traces;

pub use thinklio_quickstart::{exit_with, init_logging, offline};

/// Where a host's spans go: `--otlp-endpoint` (with feature `otlp`; the
/// flag does not exist without it).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct TraceArgs {
    /// Export the runtime's spans (one per step, OpenTelemetry GenAI
    /// attributes) over OTLP/HTTP to the collector at this base URL, e.g.
    /// http://127.0.0.1:4318.
    #[cfg(feature = "otlp")]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// What [`init_tracing`] started: [`TraceGuard::finish`] sends the spans
/// still batched when the host ends.
#[derive(Debug, Default)]
pub struct TraceGuard {
    #[cfg(feature = "otlp")]
    traces: Option<traces::Traces>,
}

impl TraceGuard {
    /// Sends what is batched and stops exporting.
    pub async fn finish(self) {
        #[cfg(feature = "otlp")]
        if let Some(traces) = self.traces {
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
    }
}

/// Logs to standard error as [`init_logging`] does and, when `args` name an
/// OTLP endpoint, exports spans there as the service `service`.
pub fn init_tracing(args: &TraceArgs, service: &str) -> Result<TraceGuard, String> {
    #[cfg(feature = "otlp")]
    if let Some(endpoint) = &args.otlp_endpoint {
        let traces = traces::init(endpoint, service).map_err(|e| e.to_string())?;
        return Ok(TraceGuard {
            traces: Some(traces),
        });
    }
    let _ = (args, service);
    init_logging();
    Ok(TraceGuard::default())
}

/// Usage of an account (or of one of its users) this calendar month, UTC:
/// when the month began, and the totals since — what `/usage` shows on
/// every channel.
pub async fn usage_this_month(
    runtime: &thinklio_core::Runtime,
    account: thinklio_core::AccountId,
    user: Option<thinklio_core::UserId>,
) -> Result<(thinklio_core::Timestamp, thinklio_core::UsageTotals), thinklio_core::RuntimeError> {
    let (since, mut filter) = this_month(account);
    if let Some(user) = user {
        filter = filter.user(user);
    }
    let host = thinklio_core::Actor::Account(account);
    Ok((since, runtime.usage().totals(host, &filter).await?))
}

/// The account's usage this calendar month (UTC), one row per agent.
pub async fn usage_by_agent_this_month(
    runtime: &thinklio_core::Runtime,
    account: thinklio_core::AccountId,
) -> Result<(thinklio_core::Timestamp, Vec<thinklio_core::UsageRow>), thinklio_core::RuntimeError> {
    let (since, filter) = this_month(account);
    let host = thinklio_core::Actor::Account(account);
    let rows = runtime
        .usage()
        .report(host, thinklio_core::UsageGroup::Agent, &filter)
        .await?;
    Ok((since, rows))
}

/// The start of this calendar month (UTC), and a filter of the account's
/// usage since then.
fn this_month(
    account: thinklio_core::AccountId,
) -> (thinklio_core::Timestamp, thinklio_core::UsageFilter) {
    use thinklio_core::Clock;
    let now = thinklio_core::SystemClock.now();
    let since = thinklio_core::BudgetPeriod::Monthly.start(now);
    let filter = thinklio_core::UsageFilter::all()
        .account(account)
        .between(since, now.plus(std::time::Duration::from_secs(1)));
    (since, filter)
}

/// Removes a SQLite database file and its WAL companions (the examples keep
/// theirs in the temp directory and clean up after themselves).
pub fn remove_database(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
