//! Delegation in Thinklio: a concierge agent hands questions to a researcher,
//! which can ask a calculator agent. Prints the delegation graph (Mermaid,
//! then Graphviz DOT) and runs one delegated interaction on an offline
//! scripted model.
//!
//! ```text
//! cargo run --example delegation
//! ```

use std::process::ExitCode;

use thinklio_core::{AgentDefinition, Delegate, Principal, Role, Runtime, StepKind};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

/// One offline model for all three agents: each agent has its own model id,
/// and the model delegates when it is offered a delegate, then passes the
/// answer it got back up the chain.
fn offline_model() -> ScriptedModel {
    ScriptedModel::responder(|request| {
        let Some(last) = request.messages.last() else {
            return ScriptedReply::text("Hello.");
        };
        let delegate = request.tools.iter().find(|t| t.name.starts_with("ask_"));
        match (last.role, delegate) {
            (Role::User, Some(tool)) => {
                let args = serde_json::json!({ "task": last.content }).to_string();
                ScriptedReply::tool_call("call_1", tool.name.clone(), args)
            }
            (Role::Tool, _) => {
                ScriptedReply::text(format!("{} (via {})", last.content, request.model))
            }
            _ => ScriptedReply::text(format!("{} worked out: 17 × 23 = 391", request.model)),
        }
    })
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("thinklio-delegation-{}.db", std::process::id()));
    let runtime = Runtime::builder()
        .store(SqliteStore::open(&path).await?)
        .model(offline_model())
        .agent(
            AgentDefinition::new("concierge", "concierge-model").capabilities(["ask_researcher"]),
        )
        .agent(
            AgentDefinition::new("researcher", "researcher-model").capabilities(["ask_calculator"]),
        )
        .agent(AgentDefinition::new("calculator", "calculator-model"))
        .delegate(Delegate::new(
            "researcher",
            "ask_researcher",
            "Researches a question.",
        ))
        .delegate(Delegate::new(
            "calculator",
            "ask_calculator",
            "Works out arithmetic.",
        ))
        .build()?;

    let graph = runtime.directory().graph();
    println!("{}", graph.to_mermaid());
    println!("{}", graph.to_dot());

    let session = runtime
        .open_session(Principal::local(), "concierge", "cli", None)
        .await?;
    let reply = runtime.send(session.id, "what is 17 × 23?").await?;
    println!("reply: {}", reply.text);
    for interaction in runtime
        .sessions()
        .interactions(Principal::local(), session.id)
        .await?
    {
        let steps = runtime
            .sessions()
            .steps(Principal::local(), interaction.id)
            .await?;
        let kinds: Vec<&str> = steps.iter().map(|s| s.kind.as_str()).collect();
        let delegated = steps.iter().any(|s| s.kind == StepKind::Act);
        println!(
            "{:>10} at depth {}: {}{}",
            interaction.agent_id,
            interaction.delegation_depth,
            kinds.join(" → "),
            if delegated { " (delegated)" } else { "" }
        );
    }
    println!(
        "[steps {} · tokens {} · cost {}, the delegates' included]",
        reply.steps,
        reply.usage.total(),
        reply.cost
    );
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
