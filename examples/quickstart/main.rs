//! Thinklio's quickstart: one agent with a calculator and a clock, durable on
//! a SQLite file.
//!
//! ```text
//! cargo run --example quickstart -- --db /tmp/q.db --message "what is 17*23?"
//! cargo run --example quickstart -- --db /tmp/q.db          # interactive chat
//! ```
//!
//! The model comes from `THINKLIO_MODEL` (`openai/gpt-4o-mini`,
//! `anthropic/claude-sonnet-4-5`, `openrouter/...`, `ollama/llama3.2`) with
//! the keys and base URLs each provider's SDKs read. Without it, an offline
//! scripted model answers arithmetic and time questions.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use thinklio_capabilities::{McpHttp, McpServer, WebhookCapability, WebhookSecret, builtin};
use thinklio_core::approval::{ApprovalMode, Decision};
use thinklio_core::{
    AgentDefinition, Principal, Reply, Role, Runtime, SessionId, StepKind, TodoStore, TrustLevel,
};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_quickstart::offline::{ByModel, calculator, model_from_env};
use thinklio_store_sqlite::SqliteStore;

/// Thinklio quickstart: chat with an agent that has a calculator and a clock.
#[derive(Parser)]
struct Args {
    /// The SQLite file holding sessions, interactions and steps.
    #[arg(long, default_value = "thinklio.db")]
    db: PathBuf,
    /// Answer this one message and exit; without it, chat interactively.
    #[arg(long)]
    message: Option<String>,
    /// The conversation to continue (one session per key).
    #[arg(long, default_value = "default")]
    session: String,
    /// Attach an MCP server over stdio: its command line (repeatable).
    #[arg(long = "mcp", value_name = "COMMAND ARGS")]
    mcp: Vec<String>,
    /// Attach an MCP server over streamable HTTP: its URL (repeatable).
    #[arg(long = "mcp-url", value_name = "URL")]
    mcp_urls: Vec<String>,
    /// A header sent to every `--mcp-url` server, such as `Authorization:
    /// Bearer TOKEN` (repeatable; never printed).
    #[arg(long = "mcp-header", value_name = "NAME: VALUE")]
    mcp_headers: Vec<String>,
    /// Attach an HTTP webhook as capability NAME (repeatable); requests are
    /// signed with the secret in THINKLIO_WEBHOOK_SECRET.
    #[arg(long = "webhook", value_name = "NAME=URL")]
    webhooks: Vec<String>,
    /// Print every capability the agent can see, with its manifest, as JSON.
    #[arg(long)]
    capabilities: bool,
    /// Invoke one capability through the harness (durably, as a step) and
    /// print its result as JSON.
    #[arg(long, num_args = 2, value_names = ["NAME", "JSON"])]
    call: Option<Vec<String>>,
}

/// The console agent's model id: its calls go to a scripted model that
/// makes exactly the call asked for on the command line.
const CONSOLE_MODEL: &str = "thinklio-console";

/// The console's model: calls `name` with `arguments`, then answers with the result.
fn console_model(call: Option<(String, String)>) -> ScriptedModel {
    ScriptedModel::responder(move |request| match (request.messages.last(), &call) {
        (Some(m), Some((name, arguments))) if m.role == Role::User => {
            ScriptedReply::tool_call("console_call", name.clone(), arguments.clone())
        }
        (Some(m), _) => ScriptedReply::text(m.content.clone()),
        (None, _) => ScriptedReply::text(""),
    })
}

fn print_reply(reply: &Reply) {
    println!("{}", reply.text);
    println!(
        "[steps {} · tokens {} (in {}, out {}) · cost {}]",
        reply.steps,
        reply.usage.total(),
        reply.usage.input_tokens,
        reply.usage.output_tokens,
        reply.cost
    );
}

/// Asks on the console about each call the reply waits for (y approves,
/// anything else rejects), then returns the interaction's reply.
async fn ask_decisions(
    runtime: &Runtime,
    session: SessionId,
    reply: Reply,
) -> Result<Reply, String> {
    if reply.waiting.is_empty() {
        return Ok(reply);
    }
    let me = Principal::local();
    for pending in runtime
        .approvals()
        .of_session(me, session)
        .await
        .map_err(|e| e.to_string())?
    {
        print!(
            "Run `{}` with {}? [y/n] ",
            pending.capability, pending.arguments
        );
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| e.to_string())?;
        let decision = match answer.trim() {
            "y" | "Y" | "yes" => Decision::Approve,
            _ => Decision::Reject {
                reason: Some("the user said no".into()),
            },
        };
        runtime
            .approvals()
            .decide(me, pending.step_id, decision, "console")
            .await
            .map_err(|e| e.to_string())?;
    }
    let text = runtime
        .sessions()
        .reply(me, reply.interaction_id)
        .await
        .map_err(|e| e.to_string())?
        .map(|m| m.text)
        .unwrap_or_default();
    let mut reply = reply;
    reply.text = text;
    reply.waiting.clear();
    Ok(reply)
}

async fn run(args: Args) -> Result<(), String> {
    let (model, model_id) = model_from_env()?;
    let store = SqliteStore::open(&args.db)
        .await
        .map_err(|e| e.to_string())?;
    let todos: Arc<dyn TodoStore> = Arc::new(store.clone());
    let call = match args.call.as_deref() {
        Some([name, arguments]) => Some((name.clone(), arguments.clone())),
        _ => None,
    };
    let assistant = |capabilities: &[String]| {
        AgentDefinition::new("assistant", model_id.clone())
            .system_prompt(
                "You are Thinklio's quickstart assistant. Use the calculator for arithmetic and the clock \
                 for the date and time, and the todo list for the user's todos. Answer briefly.",
            )
            .capabilities(capabilities.iter().cloned())
            // Calls that change something (adding a todo) wait for a y/n.
            .approval_mode(ApprovalMode::Draft)
    };
    let console = |capabilities: &[String]| {
        AgentDefinition::new("console", CONSOLE_MODEL).capabilities(capabilities.iter().cloned())
    };
    let mut names: Vec<String> = [
        "calculator",
        "clock",
        "web_fetch",
        "todo_add",
        "todo_list",
        "todo_done",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut builder = Runtime::builder()
        .store(store)
        .prices(
            // The console's scripted model runs here and costs nothing.
            thinklio_quickstart::offline::prices().with(
                CONSOLE_MODEL,
                thinklio_core::ModelPrice::usd_per_million(0.0, 0.0),
            ),
        )
        .model(ByModel::new(
            CONSOLE_MODEL,
            console_model(call.clone()),
            model,
        ))
        .capability(calculator())
        .capability(builtin::clock())
        .capability(builtin::web_fetch())
        .agent(assistant(&names))
        .agent(console(&names));
    for todo in builtin::todo_list(todos) {
        builder = builder.capability(todo);
    }
    let runtime = builder.build().map_err(|e| e.to_string())?;
    // Hold the MCP servers for as long as the runtime runs.
    let mut servers = Vec::new();
    for command in &args.mcp {
        let server = McpServer::spawn(command).await.map_err(|e| e.to_string())?;
        let attached = server
            .attach(runtime.capabilities())
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("attached {} tool(s) of `{command}`", attached.len());
        names.extend(attached);
        servers.push(server);
    }
    for url in &args.mcp_urls {
        let mut http = McpHttp::new(url);
        for header in &args.mcp_headers {
            let Some((name, value)) = header.split_once(':') else {
                return Err("--mcp-header is not NAME: VALUE".to_owned());
            };
            http = http
                .header(name.trim(), value.trim())
                .map_err(|e| e.to_string())?;
        }
        let server = McpServer::connect_with(http)
            .await
            .map_err(|e| e.to_string())?;
        let attached = server
            .attach(runtime.capabilities())
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("attached {} tool(s) of {url}", attached.len());
        names.extend(attached);
        servers.push(server);
    }
    if !args.webhooks.is_empty() {
        let secret = std::env::var("THINKLIO_WEBHOOK_SECRET").map_err(|_| {
            "--webhook needs THINKLIO_WEBHOOK_SECRET, the secret its requests are signed with"
                .to_owned()
        })?;
        for spec in &args.webhooks {
            let Some((name, url)) = spec.split_once('=') else {
                return Err(format!("--webhook `{spec}` is not NAME=URL"));
            };
            let hook = WebhookCapability::new(
                name,
                format!("The webhook at {url}."),
                url,
                WebhookSecret::new(secret.clone()),
            );
            runtime
                .capabilities()
                .register(hook)
                .map_err(|e| e.to_string())?;
            names.push(name.to_owned());
        }
    }
    runtime
        .directory()
        .register_agent(assistant(&names))
        .map_err(|e| e.to_string())?;
    runtime
        .directory()
        .register_agent(console(&names))
        .map_err(|e| e.to_string())?;
    if args.capabilities {
        let manifests: Vec<_> = names
            .iter()
            .filter_map(|n| runtime.capabilities().get(n))
            .filter(|c| c.manifest().trust_level <= TrustLevel::Standard)
            .map(|c| c.manifest().clone())
            .collect();
        let json = serde_json::to_string_pretty(&manifests).map_err(|e| e.to_string())?;
        println!("{json}");
        return Ok(());
    }
    let report = runtime.recover().await.map_err(|e| e.to_string())?;
    if report.resumed > 0 {
        eprintln!("resumed {} interrupted interaction(s)", report.resumed);
    }
    if let Some((name, arguments)) = call {
        return call_once(&runtime, &name, &arguments).await;
    }
    let session = runtime
        .open_session(Principal::local(), "assistant", "cli", Some(&args.session))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(message) = args.message {
        let reply = runtime
            .send(session.id, message)
            .await
            .map_err(|e| e.to_string())?;
        let reply = ask_decisions(&runtime, session.id, reply).await?;
        print_reply(&reply);
        return Ok(());
    }
    eprintln!(
        "Chatting in session `{}`; an empty line or Ctrl-D ends.",
        args.session
    );
    let stdin = std::io::stdin();
    loop {
        print!("> ");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?
            == 0
            || line.trim().is_empty()
        {
            return Ok(());
        }
        match runtime.send(session.id, line.trim()).await {
            Ok(reply) => print_reply(&ask_decisions(&runtime, session.id, reply).await?),
            Err(e) => eprintln!("error [{}]: {e}", e.code()),
        }
    }
}

/// Invokes one capability through the harness as the console agent, and
/// prints the result of its `act` step as JSON.
async fn call_once(runtime: &Runtime, name: &str, arguments: &str) -> Result<(), String> {
    if runtime.capabilities().get(name).is_none() {
        return Err(format!(
            "no capability named `{name}`; --capabilities lists them"
        ));
    }
    let session = runtime
        .open_session(Principal::local(), "console", "console", Some("calls"))
        .await
        .map_err(|e| e.to_string())?;
    let reply = runtime
        .send(session.id, format!("call {name} {arguments}"))
        .await
        .map_err(|e| e.to_string())?;
    let steps = runtime
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .map_err(|e| e.to_string())?;
    let Some(act) = steps.iter().find(|s| s.kind == StepKind::Act) else {
        return Err("the call was not made".into());
    };
    if let Some(error) = &act.error {
        return Err(format!("{name} failed [{}]: {}", error.code, error.message));
    }
    let output = act
        .output_as::<thinklio_core::step::payload::ActOutput>()
        .map_err(|e| e.to_string())?
        .ok_or("the call has no outcome")?;
    let json = serde_json::to_string_pretty(&output.result).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    thinklio_quickstart::init_logging();
    thinklio_quickstart::exit_with(run(Args::parse()).await)
}
