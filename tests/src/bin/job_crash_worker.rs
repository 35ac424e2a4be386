//! The process the job crash test kills.
//!
//! Usage: `job-crash-worker DB WORK_LOG AUDIT_LOG setup|resume`.
//!
//! `setup` dispatches five jobs through an agent and leaves them in every
//! state that is not an end: a repeatable and an `external` job blocked in
//! their dispatch (`dispatched`), a fan-out waiting on two subjobs of which
//! one resolved and one is blocked (`in_progress`, with partial output),
//! work accepted by something outside (`in_progress`, with a short
//! deadline), and one job nobody claimed (`pending`). Its audit observer is
//! offline, so notices wait in the outbox. It prints `ready` and waits to
//! be killed.
//!
//! `resume` recovers, runs the job worker until every job has ended and
//! every notice is delivered, prints `done` and exits. Its audit observer
//! writes each notice once to AUDIT_LOG (a repeat, delivered again after a
//! kill that came before the store recorded the delivery, goes to
//! AUDIT_LOG.repeats, as a receiver that de-duplicates on the notice id
//! would drop it).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use thinklio_core::{
    AgentDefinition, Capability, CapabilityError, CapabilityKind, CapabilityManifest, Dispatch,
    FunctionCapability, InvocationContext, JobCallbacks, JobNotice, JobState, JobStore,
    ObserverCallback, ObserverKind, Principal, RetryPolicy, Role, Runtime, RuntimeConfig,
    SideEffect, StepMode, Usefulness,
};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

/// The capabilities the agent dispatches, in the order of the messages.
pub const JOBS: [&str; 4] = ["repeatable", "external", "fan_out", "outside"];

fn append(path: &PathBuf, line: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
        .map_err(|e| e.to_string())
}

/// The arguments of the workers: a piece is `fast` or slow.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Work {
    /// `fast`, or anything else for slow.
    #[serde(default)]
    speed: Option<String>,
}

/// A deferred capability that logs each run; in `setup` it then blocks
/// until the process dies.
fn worker(name: &str, side_effect: SideEffect, log: PathBuf, setup: bool) -> FunctionCapability {
    let name_owned = name.to_owned();
    FunctionCapability::builder(name, "Works in the background.")
        .side_effect(side_effect)
        .default_mode(StepMode::Deferred)
        .timeout(Duration::from_secs(600))
        .handler_with_context(move |cx: InvocationContext, args: Work| {
            let log = log.clone();
            let name = name_owned.clone();
            async move {
                let job = cx
                    .job
                    .as_ref()
                    .map(|j| j.id().to_string())
                    .unwrap_or_default();
                let slow = args.speed.as_deref() != Some("fast");
                append(
                    &log,
                    &format!("{name} {job} {}", if setup { "setup" } else { "resume" }),
                )?;
                if setup && slow {
                    std::future::pending::<()>().await;
                }
                Ok::<_, String>(json!(format!("{name} done")))
            }
        })
}

/// Splits its work into a fast and a slow `piece`.
fn fan_out() -> FunctionCapability {
    FunctionCapability::builder("fan_out", "Splits work into two pieces.")
        .side_effect(SideEffect::Idempotent)
        .default_mode(StepMode::Deferred)
        .usefulness(Usefulness::AnyCompletedSubjob)
        .timeout(Duration::from_secs(600))
        .handler_with_context(|cx: InvocationContext, _: Work| async move {
            let job = cx.job.ok_or("fan_out runs as a job")?;
            for speed in ["fast", "slow"] {
                job.subjob("piece", json!({ "speed": speed }))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(json!({ "pieces": 2 }))
        })
}

/// Work handed to something outside that never reports: it times out.
struct Outside(CapabilityManifest);

#[async_trait::async_trait]
impl Capability for Outside {
    fn manifest(&self) -> &CapabilityManifest {
        &self.0
    }

    async fn invoke(&self, _: &InvocationContext, _: Value) -> Result<Value, CapabilityError> {
        Err(CapabilityError::failed("runs only as a job"))
    }

    async fn dispatch(&self, _: &InvocationContext, _: Value) -> Result<Dispatch, CapabilityError> {
        Ok(Dispatch::Accepted)
    }
}

fn outside() -> Outside {
    let mut m = CapabilityManifest::new(
        "outside",
        "Hands work to an outside system.",
        CapabilityKind::Webhook,
        json!({ "type": "object" }),
    );
    m.default_mode = StepMode::Deferred;
    m.side_effect = SideEffect::External;
    m.timeout = Duration::from_millis(1500);
    Outside(m)
}

/// The audit observer: offline in `setup`; in `resume`, writes each notice
/// once, de-duplicating on its id as a careful receiver does.
struct Audit {
    path: PathBuf,
    online: bool,
    seen: Mutex<HashSet<String>>,
}

#[async_trait::async_trait]
impl ObserverCallback for Audit {
    async fn notify(&self, n: &JobNotice) -> Result<(), String> {
        if !self.online {
            return Err("the audit observer is offline".into());
        }
        let id = n.notification_id.to_string();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&id) {
            return append(&self.path.with_extension("repeats"), &id);
        }
        append(&self.path, &format!("{id} {} {}", n.job.id, n.notice))?;
        seen.insert(id);
        Ok(())
    }
}

/// Each answer takes a little while, so a kill during recovery often lands
/// while follow-ups are being written.
fn model() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let last = r.messages.last().map(|m| (m.role, m.content.clone()));
        match last {
            Some((Role::User, text)) if text.starts_with("[job") => {
                ScriptedReply::text(format!("noted: {text}"))
            }
            Some((Role::User, text)) => {
                let tool = text.trim_start_matches("run ").to_owned();
                ScriptedReply::tool_call("c1", tool, "{}")
            }
            _ => ScriptedReply::text("under way"),
        }
    })
    .with_delay(Duration::from_millis(40))
    .without_recording()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, work_log, audit_log, phase] = args.as_slice() else {
        return Err("usage: job-crash-worker DB WORK_LOG AUDIT_LOG setup|resume".into());
    };
    let setup = phase == "setup";
    let work_log = PathBuf::from(work_log);
    let audit_path = PathBuf::from(audit_log);
    let seen = std::fs::read_to_string(&audit_path)
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let audit = Audit {
        path: audit_path,
        online: !setup,
        seen: Mutex::new(seen),
    };
    let store = Arc::new(SqliteStore::open(db).await?);
    // A notice a killed run had taken is taken again after its lease: a
    // short one keeps the test short.
    let mut config = RuntimeConfig::default();
    config.task_lease = Duration::from_secs(2);
    config.retry_policy = RetryPolicy {
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let runtime = Runtime::builder()
        .config(config)
        .store_arc(store.clone())
        .model(model())
        .capability(worker(
            "repeatable",
            SideEffect::Idempotent,
            work_log.clone(),
            setup,
        ))
        .capability(worker(
            "external",
            SideEffect::External,
            work_log.clone(),
            setup,
        ))
        .capability(worker(
            "piece",
            SideEffect::Idempotent,
            work_log.clone(),
            setup,
        ))
        .capability(fan_out())
        .capability(outside())
        .agent(AgentDefinition::new("agent", "scripted").capabilities(JOBS))
        .job_callbacks(JobCallbacks::new("http://127.0.0.1/jobs/{job}", "secret"))
        .observer_callback("audit", audit)
        .job_observer(ObserverKind::Callback {
            name: "audit".into(),
        })
        .build()?;
    let session = runtime
        .open_session(Principal::local(), "agent", "crash", Some("jobs"))
        .await?;

    if setup {
        for name in JOBS {
            runtime.send(session.id, format!("run {name}")).await?;
        }
        let worker = runtime.spawn_job_worker(Duration::from_millis(20));
        // Wait for the four jobs and the fan-out's pieces to reach their states.
        loop {
            let jobs = store.unfinished_jobs().await?;
            let state = |cap: &str| {
                jobs.iter()
                    .filter(|j| j.capability == cap)
                    .map(|j| j.state)
                    .collect::<Vec<_>>()
            };
            if state("repeatable") == [JobState::Dispatched]
                && state("external") == [JobState::Dispatched]
                && state("fan_out") == [JobState::InProgress]
                && state("outside") == [JobState::InProgress]
                && state("piece") == [JobState::Dispatched]
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worker.stop().await;
        // One more job that nobody claims before the kill.
        runtime.send(session.id, "run repeatable").await?;
        println!("ready");
        std::io::stdout().flush()?;
        std::future::pending::<()>().await;
        return Ok(());
    }

    let report = runtime.recover().await?;
    println!("recovered {:?}", report.jobs);
    std::io::stdout().flush()?;
    let worker = runtime.spawn_job_worker(Duration::from_millis(20));
    loop {
        let open = store.unfinished_jobs().await?;
        let due = store
            .due_notifications(thinklio_core::Timestamp::from_millis(i64::MAX), 1)
            .await?;
        if open.is_empty() && due.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.stop().await;
    println!("done");
    std::io::stdout().flush()?;
    Ok(())
}
