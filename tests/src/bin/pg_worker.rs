//! One of several worker processes sharing a PostgreSQL store: it runs the
//! interaction worker and the job worker until it is killed.
//!
//! Usage: `pg-worker SCHEMA WORK_LOG` with `THINKLIO_POSTGRES_URL` set.
//! Every `record` call and every job run appends a line to WORK_LOG (with
//! the call's idempotency key or the job's id), so the test can tell that
//! nothing ran twice. Prints `ready` once its workers run.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_core::{
    AgentDefinition, FunctionCapability, InvocationContext, Role, Runtime, RuntimeConfig,
    SideEffect, StepMode,
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
fn runtime_builder(log: PathBuf) -> thinklio_core::RuntimeBuilder {
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
    Runtime::builder()
        .config(config)
        .model(model)
        .capability(record)
        .capability(brew)
        .agent(AgentDefinition::new("worker", "scripted").capabilities(["record", "brew"]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, schema, log] = args.as_slice() else {
        return Err("usage: pg-worker SCHEMA WORK_LOG".into());
    };
    let store = thinklio_tests::open_store(&format!("postgres:{schema}")).await?;
    let runtime = runtime_builder(PathBuf::from(log))
        .store_arc(store)
        .build()?;
    runtime.recover().await?;
    let _interactions = runtime.spawn_interaction_worker(Duration::from_secs(1), 8);
    let _jobs = runtime.spawn_job_worker(Duration::from_secs(1));
    println!("ready");
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
