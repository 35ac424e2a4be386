//! The process the crash test kills: it recovers a SQLite file, then works
//! through a fixed set of messages across several sessions, with a capability
//! whose side effect (a line appended to a file) must never happen twice.
//!
//! Usage: `crash-worker DB SIDE_EFFECT_LOG DELIVERY_LOG SESSIONS PER_SESSION [MODE]`,
//! where DB is a SQLite file or `postgres:SCHEMA` (a schema of the server at
//! `THINKLIO_POSTGRES_URL`).
//! In mode `direct` (the default) the agent calls the capabilities itself; in
//! mode `delegate` it hands every message to a helper agent (a delegate) that
//! does; in mode `approve` the agent runs in `draft`, so each external call
//! waits for a decision, which the worker takes through the runtime: every
//! fourth message's call is rejected, the others approved; mode
//! `approve-delegate` does both: the helper runs in `draft`, so its calls
//! pause it and the worker above it until they are decided. It prints
//! `recovered ...` once recovery is done, `done` when every message is
//! answered, and exits 0.
//!
//! With a last argument `POINT:N` it stops the `N`-th time it reaches
//! `POINT`, prints `paused POINT` and waits to be killed
//! ([`thinklio_tests::KillPoint`]). Points: `think:worker` and
//! `think:helper` (inside that agent's model call), `effect:before` and
//! `effect:after` (inside the external capability, around its side effect),
//! `decide:before` (a call waits and nobody has decided yet),
//! `deliver:before` and `deliver:after` (inside the channel, around the
//! delivery of a reply).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_core::approval::{ApprovalMode, Decision};
use thinklio_core::{
    AgentDefinition, ChatModel, ChatRequest, ChatResponse, ChatStream, Delegate, DeliveryError,
    FunctionCapability, Inbound, ModelError, OutboxMessage, Principal, ReplySink, Role, Runtime,
    SideEffect,
};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_tests::{KillPoint, reached};

#[derive(Deserialize, JsonSchema)]
struct RecordArgs {
    /// What to record.
    entry: String,
}

/// A reply sink that de-duplicates on the outbox id, as a channel that takes
/// a client message id does: delivering the same reply twice has one effect.
struct FileSink {
    path: PathBuf,
    seen: Mutex<HashSet<String>>,
    kill: Option<Arc<KillPoint>>,
}

impl FileSink {
    fn open(path: PathBuf, kill: Option<Arc<KillPoint>>) -> std::io::Result<Self> {
        let seen = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            seen: Mutex::new(seen),
            kill,
        })
    }
}

#[async_trait::async_trait]
impl ReplySink for FileSink {
    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        reached(&self.kill, "deliver:before").await;
        self.write(message)?;
        reached(&self.kill, "deliver:after").await;
        Ok(())
    }
}

impl FileSink {
    fn write(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let id = message.id.to_string();
        if seen.contains(&id) {
            // Delivered before a crash that came before the store recorded
            // it: the channel drops the repeat. Noted for the test's report.
            let repeats = self.path.with_extension("repeats");
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(repeats)
                .and_then(|mut f| f.write_all(format!("{id}\n").as_bytes()));
            return Ok(());
        }
        let line = format!("{id} {}\n", message.interaction_id);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| DeliveryError {
                message: e.to_string(),
                retryable: true,
            })?;
        seen.insert(id);
        Ok(())
    }
}

fn model() -> ScriptedModel {
    ScriptedModel::responder(|request| {
        let last = request.messages.last().map(|m| (m.role, m.content.clone()));
        let delegates = request.tools.iter().any(|t| t.name == "ask_helper");
        match last {
            Some((Role::User, text)) if delegates => {
                let args = serde_json::json!({ "task": text }).to_string();
                ScriptedReply::tool_call("c0", "ask_helper", args)
            }
            Some((Role::User, text)) => {
                let (verb, n) = text.split_once(' ').unwrap_or((text.as_str(), "0"));
                match verb {
                    "ext" => {
                        ScriptedReply::tool_call("c1", "record", format!(r#"{{"entry": "{n}"}}"#))
                    }
                    _ => ScriptedReply::tool_call("c1", "add", format!(r#"{{"a": {n}, "b": 1}}"#)),
                }
            }
            Some((_, content)) => ScriptedReply::text(format!("done: {content}")),
            None => ScriptedReply::text("nothing to do"),
        }
    })
    .with_delay(Duration::from_millis(15))
    .without_recording()
}

/// The scripted model, stopping at `think:AGENT` kill points.
struct PausingModel {
    inner: ScriptedModel,
    delegated: bool,
    kill: Option<Arc<KillPoint>>,
}

impl PausingModel {
    async fn reach(&self, request: &ChatRequest) {
        let worker = !self.delegated || request.tools.iter().any(|t| t.name == "ask_helper");
        let point = if worker {
            "think:worker"
        } else {
            "think:helper"
        };
        reached(&self.kill, point).await;
    }
}

#[async_trait::async_trait]
impl ChatModel for PausingModel {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        self.reach(request).await;
        self.inner.chat(request).await
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        self.reach(request).await;
        self.inner.chat_stream(request).await
    }
}

/// What the worker decides about message `n`'s call: every fourth is rejected.
fn decision_for(n: usize) -> Decision {
    if n % 4 == 2 {
        Decision::Reject {
            reason: Some(format!("not {n}")),
        }
    } else {
        Decision::Approve
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (db, effects, deliveries, sessions, per_session, mode, kill) = match args.as_slice() {
        [_, db, effects, deliveries, sessions, per_session, rest @ ..] if rest.len() <= 2 => (
            db,
            effects,
            deliveries,
            sessions,
            per_session,
            rest.first().map_or("direct", String::as_str),
            rest.get(1).and_then(|k| KillPoint::parse(k)).map(Arc::new),
        ),
        _ => {
            return Err(
                "usage: crash-worker DB SIDE_EFFECT_LOG DELIVERY_LOG SESSIONS PER_SESSION [direct|delegate|approve|approve-delegate [POINT:N]]"
                    .into(),
            );
        }
    };
    let delegated = mode.contains("delegate");
    let approving = mode.starts_with("approve");
    let helper_mode = if approving {
        ApprovalMode::Draft
    } else {
        ApprovalMode::Autopilot
    };
    let sessions: usize = sessions.parse()?;
    let per_session: usize = per_session.parse()?;
    let effects = PathBuf::from(effects);
    let effect_kill = kill.clone();
    let record = FunctionCapability::builder("record", "Records an entry in the side-effect log.")
        .side_effect(SideEffect::External)
        .handler_with_context(move |ctx, args: RecordArgs| {
            let effects = effects.clone();
            let kill = effect_kill.clone();
            async move {
                reached(&kill, "effect:before").await;
                tokio::time::sleep(Duration::from_millis(3)).await;
                let line = format!("{} {}\n", ctx.idempotency_key, args.entry);
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&effects)
                    .and_then(|mut f| f.write_all(line.as_bytes()))
                    .map_err(|e| e.to_string())?;
                reached(&kill, "effect:after").await;
                tokio::time::sleep(Duration::from_millis(3)).await;
                Ok::<_, String>("recorded")
            }
        });
    let tools = ["record", "add"];
    let decide_kill = kill.clone();
    let builder = Runtime::builder()
        .store_arc(thinklio_tests::open_store(db).await?)
        .model(PausingModel {
            inner: model(),
            delegated,
            kill: kill.clone(),
        })
        .capability(record)
        .capability(thinklio_tests::add())
        .reply_sink(FileSink::open(PathBuf::from(deliveries), kill)?);
    let builder = match delegated {
        true => builder
            .agent(AgentDefinition::new("worker", "scripted").capabilities(["ask_helper"]))
            .agent(
                AgentDefinition::new("helper", "scripted")
                    .capabilities(tools)
                    .approval_mode(helper_mode),
            )
            .delegate(Delegate::new(
                "helper",
                "ask_helper",
                "Hands the task to the helper.",
            )),
        false if approving => builder.agent(
            AgentDefinition::new("worker", "scripted")
                .capabilities(tools)
                .approval_mode(ApprovalMode::Draft),
        ),
        false => builder.agent(AgentDefinition::new("worker", "scripted").capabilities(tools)),
    };
    let runtime = builder.build()?;
    let report = runtime.recover().await?;
    println!(
        "recovered resumed={} completed={} failed={} delivered={} errors={:?}",
        report.resumed, report.completed, report.failed, report.delivered, report.errors
    );
    std::io::stdout().flush()?;
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let runtime = runtime.clone();
        let kill = decide_kill.clone();
        tasks.push(tokio::spawn(async move {
            let session = runtime
                .open_session(
                    Principal::local(),
                    "worker",
                    "crash",
                    Some(&format!("s{s}")),
                )
                .await?;
            for i in 0..per_session {
                let verb = if i % 2 == 0 { "ext" } else { "calc" };
                let n = s * 1000 + i;
                let text = format!("{verb} {n}");
                let reply = runtime
                    .send(session.id, Inbound::with_id(text, format!("m{i}")))
                    .await?;
                for step in reply.waiting {
                    reached(&kill, "decide:before").await;
                    runtime
                        .approvals()
                        .decide(Principal::local(), step, decision_for(n), "crash")
                        .await?;
                }
            }
            Ok::<_, thinklio_core::RuntimeError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!("done");
    Ok(())
}
