//! One of several worker processes sharing a PostgreSQL store: it runs the
//! interaction worker and the job worker until it is killed.
//!
//! Usage: `pg-worker SCHEMA WORK_LOG [graceful]` with `THINKLIO_POSTGRES_URL`
//! set. Every `record` call and every job run appends a line to WORK_LOG
//! (with the call's idempotency key or the job's id), so the test can tell
//! that nothing ran twice. Prints `ready` once its workers run.
//!
//! `wide`: it runs up to 100 sessions at once (8 otherwise).
//!
//! `graceful`: wide, and each first model call
//! waits (announced on stdout as `thinking N`, N the calls waiting) until
//! the process gets SIGTERM; then it shuts the runtime down
//! (`Runtime::shutdown`: the waiting calls finish, each run stops at that
//! step, the sessions are given back), prints `stopped STOPPED CUT_OFF
//! RELEASED` and exits.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_core::{
    AgentDefinition, ChatModel, FunctionCapability, InvocationContext, Role, Runtime,
    RuntimeConfig, SideEffect, StepMode,
};
use thinklio_llm::{ScriptedModel, ScriptedReply};

#[derive(Deserialize, JsonSchema)]
struct Entry {
    /// What to record.
    entry: String,
}

fn append(path: &PathBuf, line: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
        .map_err(|e| e.to_string())
}

/// The agent and capabilities of a worker.
fn runtime_builder(
    log: PathBuf,
    gate: Option<watch::Receiver<bool>>,
) -> thinklio_core::RuntimeBuilder {
    let record_log = log.clone();
    let record = FunctionCapability::builder("record", "Records an entry.")
        .side_effect(SideEffect::External)
        .handler_with_context(move |cx: InvocationContext, args: Entry| {
            let log = record_log.clone();
            async move {
                append(
                    &log,
                    &format!("record {} {}", cx.idempotency_key, args.entry),
                )?;
                Ok::<_, String>("recorded")
            }
        });
    let brew = FunctionCapability::builder("brew", "Brews something slowly, as a job.")
        .side_effect(SideEffect::External)
        .default_mode(StepMode::Deferred)
        .timeout(Duration::from_secs(600))
        .handler_with_context(move |cx: InvocationContext, args: Entry| {
            let log = log.clone();
            async move {
                let job = cx
                    .job
                    .as_ref()
                    .map(|j| j.id().to_string())
                    .unwrap_or_default();
                append(&log, &format!("job {job} {}", args.entry))?;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, String>(format!("brewed {}", args.entry))
            }
        });
    let model = ScriptedModel::responder(|r| {
        let last = r.messages.last().map(|m| (m.role, m.content.clone()));
        match last {
            Some((Role::User, text)) if text.starts_with("[job") => {
                ScriptedReply::text(format!("noted: {text}"))
            }
            Some((Role::User, text)) => {
                let tool = if text.ends_with(" job") {
                    "brew"
                } else {
                    "record"
                };
                let args = serde_json::json!({ "entry": text }).to_string();
                ScriptedReply::tool_call("c1", tool, args)
            }
            Some((_, content)) => ScriptedReply::text(format!("done: {content}")),
            None => ScriptedReply::text("nothing to do"),
        }
    })
    .with_delay(Duration::from_millis(2))
    .without_recording();
    let mut config = RuntimeConfig::default();
    config.shared_store = true;
    config.task_lease = Duration::from_secs(2);
    let model: Arc<dyn ChatModel> = match gate {
        None => Arc::new(model),
        Some(open) => {
            // Long leases: a handover that waited for one would show.
            config.task_lease = Duration::from_secs(30);
            Arc::new(thinklio_tests::Gated::new(model, open, |n| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "thinking {n}");
                let _ = out.flush();
            }))
        }
    };
    Runtime::builder()
        .config(config)
        .model_arc(model)
        .capability(record)
        .capability(brew)
        .agent(AgentDefinition::new("worker", "scripted").capabilities(["record", "brew"]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (schema, log, graceful) = match args.as_slice() {
        [_, schema, log] => (schema, log, false),
        [_, schema, log, mode] if mode == "graceful" => (schema, log, true),
        [_, schema, log, mode] if mode == "wide" => (schema, log, false),
        _ => return Err("usage: pg-worker SCHEMA WORK_LOG [graceful|wide]".into()),
    };
    let wide = graceful || args.len() == 4;
    let (open, gate) = watch::channel(false);
    let store = thinklio_tests::open_store(&format!("postgres:{schema}")).await?;
    let runtime = runtime_builder(PathBuf::from(log), graceful.then_some(gate))
        .store_arc(store)
        .build()?;
    runtime.recover().await?;
    let concurrency = if wide { 100 } else { 8 };
    let _interactions = runtime.spawn_interaction_worker(Duration::from_secs(1), concurrency);
    let _jobs = runtime.spawn_job_worker(Duration::from_secs(1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    println!("ready");
    std::io::stdout().flush()?;
    if !graceful {
        std::future::pending::<()>().await;
    }
    term.recv().await;
    // The shutdown is polled first, so the runtime takes no next step before
    // the waiting calls are let go.
    let (report, ()) = tokio::join!(runtime.shutdown(Duration::from_secs(20)), async {
        open.send_replace(true);
    });
    let report = report?;
    println!(
        "stopped {} {} {}",
        report.stopped,
        report.cut_off.len(),
        report.released.len()
    );
    std::io::stdout().flush()?;
    Ok(())
}
