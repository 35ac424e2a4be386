//! Deferred work in Thinklio: an agent hands a slow market survey to a job
//! ("I'll get back to you"), the job splits it into two subjobs on the
//! runtime's job worker, and the agent follows up in the same session — once
//! with the first partial result, once with everything. An in-process
//! observer prints each notice as it arrives. Runs on an offline scripted
//! model.
//!
//! ```text
//! cargo run --example deferred
//! ```

use std::process::ExitCode;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use thinklio_core::{
    AgentDefinition, FunctionCapability, InvocationContext, JobNotice, ObserverCallback,
    ObserverKind, Principal, Role, Runtime, StepMode, Usefulness,
};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use tokio::sync::mpsc;

#[derive(Deserialize, JsonSchema)]
struct Survey {
    /// The market to survey.
    market: String,
}

#[derive(Deserialize, JsonSchema)]
struct Region {
    /// The market.
    market: String,
    /// The region to look at.
    region: String,
}

/// The deferred capability: two regional subjobs; its own return value is
/// the context bundle the follow-up gets with the results.
fn survey() -> FunctionCapability {
    FunctionCapability::builder("market_survey", "Surveys a market; takes a while.")
        .default_mode(StepMode::Deferred)
        .usefulness(Usefulness::AnyCompletedSubjob)
        .timeout(Duration::from_secs(3600))
        .handler_with_context(|cx: InvocationContext, args: Survey| async move {
            let job = cx.job.ok_or("market_survey runs as a job")?;
            for region in ["Europe", "Asia"] {
                job.subjob(
                    "regional_survey",
                    json!({ "market": args.market, "region": region }),
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(json!({ "market": args.market, "requested_by": "the user" }))
        })
}

/// A subjob: one region, a little slow.
fn regional_survey() -> FunctionCapability {
    FunctionCapability::builder("regional_survey", "Surveys one region of a market.").handler(
        |args: Region| async move {
            // Asia takes longer, so the first follow-up has Europe alone.
            let ms = if args.region == "Europe" { 200 } else { 800 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let size = if args.region == "Europe" { 42 } else { 57 };
            Ok::<_, String>(format!(
                "{} in {}: {size} suppliers",
                args.market, args.region
            ))
        },
    )
}

/// The offline model: starts the survey when asked, acknowledges the
/// dispatch, and summarises a follow-up from the job report it carries.
fn offline_model() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let Some(last) = r.messages.last() else {
            return ScriptedReply::text("Hello.");
        };
        let report = r
            .messages
            .iter()
            .find(|m| m.role == Role::System && m.content.starts_with("Deferred work"));
        match (last.role, report) {
            (Role::User, Some(report)) => {
                let summary: Vec<&str> = report
                    .content
                    .split('"')
                    .filter(|s| s.contains("suppliers"))
                    .collect();
                ScriptedReply::text(format!("Update on your survey: {}.", summary.join("; ")))
            }
            (Role::User, None) => ScriptedReply::tool_call(
                "call_1",
                "market_survey",
                json!({ "market": "solar panels" }).to_string(),
            ),
            _ => ScriptedReply::text(
                "I've started the survey; it takes a while, and I'll get back to you here.",
            ),
        }
    })
}

/// Prints each notice as the observer hears it.
struct Printer(mpsc::UnboundedSender<String>);

#[async_trait::async_trait]
impl ObserverCallback for Printer {
    async fn notify(&self, n: &JobNotice) -> Result<(), String> {
        let _ = self.0.send(format!(
            "  [observer] job {} ({}): {}",
            n.job.id, n.job.capability, n.notice
        ));
        Ok(())
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("thinklio-deferred-{}.db", std::process::id()));
    let (tx, mut notices) = mpsc::unbounded_channel();
    let runtime = Runtime::builder()
        .store(SqliteStore::open(&path).await?)
        .model(offline_model())
        .capability(survey())
        .capability(regional_survey())
        .agent(AgentDefinition::new("analyst", "offline").capabilities(["market_survey"]))
        .observer_callback("printer", Printer(tx))
        .job_observer(ObserverKind::Callback {
            name: "printer".into(),
        })
        .build()?;
    let worker = runtime.spawn_job_worker(Duration::from_secs(1));
    let session = runtime
        .open_session(Principal::local(), "analyst", "cli", None)
        .await?;

    println!("> survey the solar panel market, please");
    let reply = runtime
        .send(session.id, "survey the solar panel market, please")
        .await?;
    println!("{}", reply.text);

    // Wait for the observer to hear the job's end, printing as it goes.
    let mut job = None;
    while let Some(line) = notices.recv().await {
        println!("{line}");
        if line.contains("market_survey")
            && (line.ends_with("resolved") || line.ends_with("failed"))
        {
            job = line.split_whitespace().nth(2).map(str::to_owned);
            break;
        }
    }
    // Observers are told independently: wait for the follow-up of the
    // result to reply too (the one of the partial output came before it).
    let me = Principal::local();
    let mut events = runtime.subscribe();
    let follow_ups = loop {
        let mut replies = Vec::new();
        let mut finished = false;
        for i in runtime.sessions().interactions(me, session.id).await? {
            if i.job_id.is_some()
                && let Some(reply) = runtime.sessions().reply(me, i.id).await?
            {
                finished |= i.input.contains(" resolved]");
                replies.push(reply.text);
            }
        }
        if finished {
            break replies;
        }
        // Woken by the next event (a step, a reply), or checked again.
        let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
    };
    for text in follow_ups {
        println!("(follow-up) {text}");
    }
    worker.stop().await;
    if let Some(id) = job {
        let job = runtime.jobs().get(Principal::local(), id.parse()?).await?;
        println!(
            "job {} ended {} with {} subjobs; context bundle {}",
            job.id,
            job.state,
            runtime
                .jobs()
                .subjobs(Principal::local(), job.id)
                .await?
                .len(),
            job.context.unwrap_or_default()
        );
    }
    drop(runtime);
    thinklio_examples::remove_database(&path);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
