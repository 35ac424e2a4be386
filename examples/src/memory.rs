//! The `memory` command line (see `examples/memory/main.rs`): import and
//! search knowledge facts, or watch an agent learn and recall offline. It
//! lives in the library so that its tests run it in process.

/// Writes a line to the output, failing as an I/O error.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, $($arg)*).map_err(|e| CliError::Io("output".into(), e))?
    };
}

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::{Value, json};
use thinklio_core::step::payload::ContextOutput;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use uuid::Uuid;

/// The command line.
#[derive(Parser)]
#[command(about = "Import, search and demonstrate Thinklio's knowledge layers")]
pub struct Args {
    /// The SQLite database (default: a fresh file in the temp directory for the demo).
    #[arg(long)]
    db: Option<PathBuf>,
    /// `offline`, `minilm:DIR` or `openai:MODEL`.
    #[arg(long, default_value = "offline")]
    embedder: String,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do.
#[derive(Subcommand)]
pub enum Command {
    /// Imports facts from a JSON Lines file.
    Import {
        /// The file.
        file: PathBuf,
        /// Facts embedded and written per batch.
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
    /// Searches the facts a user may see.
    Search {
        /// The user.
        #[arg(long)]
        user: Option<String>,
        /// Teams the user acts for (repeatable).
        #[arg(long = "team")]
        teams: Vec<String>,
        /// The agent whose layer is visible.
        #[arg(long, default_value = "assistant")]
        agent: String,
        /// How many hits.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Answers every query of a JSON Lines file instead.
        #[arg(long)]
        queries: Option<PathBuf>,
        /// The question.
        question: Option<String>,
    },
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum CliError {
    #[error("{path}:{line}: {message}")]
    Input {
        path: String,
        line: usize,
        message: String,
    },
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Open(#[from] thinklio_store_sqlite::OpenError),
}

/// Names in files map to stable ids: the same name, the same id, every run.
const NAMES: Uuid = Uuid::from_u128(0x7411_1c10_0000_4000_8000_6e61_6d65_7321);

fn user_id(name: &str) -> UserId {
    UserId::from_uuid(
        Uuid::parse_str(name)
            .unwrap_or_else(|_| Uuid::new_v5(&NAMES, format!("user:{name}").as_bytes())),
    )
}

fn team_id(name: &str) -> TeamId {
    TeamId::from_uuid(
        Uuid::parse_str(name)
            .unwrap_or_else(|_| Uuid::new_v5(&NAMES, format!("team:{name}").as_bytes())),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    id: String,
    layer: Layer,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    predicate: String,
    value: String,
    #[serde(default)]
    valid_at: Option<String>,
    #[serde(default)]
    confidence: Option<f32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryLine {
    user: String,
    #[serde(default)]
    teams: Vec<String>,
    question: String,
    #[serde(default = "ten")]
    k: usize,
}

fn ten() -> usize {
    10
}

fn embedder(spec: &str) -> Result<Arc<dyn Embedder>, CliError> {
    match spec.split_once(':') {
        None if spec == "offline" => Ok(Arc::new(OfflineEmbedder::default())),
        #[cfg(feature = "minilm")]
        Some(("minilm", dir)) => Ok(Arc::new(thinklio_llm::MiniLm::load(dir)?)),
        #[cfg(not(feature = "minilm"))]
        Some(("minilm", _)) => Err(CliError::Usage(
            "this build runs no local model: build the example with \
             `--features thinklio-examples/minilm` for `minilm:DIR`"
                .into(),
        )),
        Some(("openai", model)) => {
            let base = std::env::var("OPENAI_BASE_URL")
                .unwrap_or_else(|_| "https://api.openai.com/v1".into());
            let key = std::env::var("OPENAI_API_KEY")
                .ok()
                .map(thinklio_llm::ApiKey::new);
            Ok(Arc::new(thinklio_llm::OpenAiEmbeddings::new(
                base, key, model, 384,
            )))
        }
        _ => Err(CliError::Usage(format!(
            "unknown embedder `{spec}`: use offline, minilm:DIR or openai:MODEL"
        ))),
    }
}

fn fact_of(line: ImportLine, account: AccountId) -> Result<NewFact, String> {
    let owner = match line.layer {
        Layer::Account => FactOwner::Account,
        Layer::Agent if !line.owner.is_empty() => FactOwner::Agent(AgentId::new(line.owner)),
        Layer::Team if !line.owner.is_empty() => FactOwner::Team(team_id(&line.owner)),
        Layer::User if !line.owner.is_empty() => FactOwner::User(user_id(&line.owner)),
        layer => return Err(format!("a {layer} fact needs an owner")),
    };
    let mut fact = NewFact::new(account, owner, line.subject, line.predicate, line.value);
    fact.provenance = Provenance::External { id: line.id };
    fact.actor = FactActor::Import("memory-cli".into());
    if let Some(c) = line.confidence {
        fact.confidence = c;
    }
    if let Some(at) = line.valid_at {
        let ts: jiff::Timestamp = at.parse().map_err(|e| format!("valid_at `{at}`: {e}"))?;
        fact.valid_at = Some(Timestamp::from_millis(ts.as_millisecond()));
    }
    Ok(fact)
}

fn hit_json(h: &FactHit) -> Value {
    json!({
        "id": h.fact.provenance.external_id().map(str::to_owned).unwrap_or_else(|| h.fact.id.to_string()),
        "layer": h.fact.layer(),
        "subject": h.fact.subject,
        "predicate": h.fact.predicate,
        "value": h.fact.value,
        "score": h.score,
    })
}

fn runtime(store: SqliteStore, embedder: Arc<dyn Embedder>) -> Result<Runtime, CliError> {
    Ok(Runtime::builder()
        .store(store)
        .model(ScriptedModel::new([]))
        .embedder_arc(embedder)
        .agent(AgentDefinition::new("assistant", "none"))
        .build()?)
}

async fn import(rt: &Runtime, path: &PathBuf, batch: usize) -> Result<(), CliError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| CliError::Io(name.clone(), e))?;
    let account = Principal::local().account;
    let mut facts = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| CliError::Io(name.clone(), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| CliError::Input {
            path: name.clone(),
            line: i + 1,
            message,
        };
        let parsed: ImportLine = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        facts.push(fact_of(parsed, account).map_err(bad)?);
    }
    let total = facts.len();
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} facts, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("embedding and writing");
    let writes = rt
        .knowledge()
        .import(
            Actor::Account(Principal::local().account),
            facts,
            batch,
            |done| bar.set_position(done as u64),
        )
        .await?;
    bar.finish_and_clear();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for w in &writes {
        *counts.entry(w.kind()).or_default() += 1;
    }
    eprintln!("imported {total} facts from {name}: {counts:?}");
    Ok(())
}

fn visibility(user: Option<&str>, teams: &[String], agent: &str) -> Visibility {
    let account = Principal::local().account;
    Visibility {
        account,
        account_layer: true,
        agent: Some(AgentId::new(agent)),
        teams: teams.iter().map(|t| team_id(t)).collect(),
        user: user.map(user_id),
    }
}

async fn search(
    rt: &Runtime,
    user: Option<&str>,
    teams: &[String],
    agent: &str,
    k: usize,
    question: &str,
) -> Result<Value, CliError> {
    let hits = rt
        .knowledge()
        .search_within(
            Actor::Account(Principal::local().account),
            visibility(user, teams, agent),
            question,
            k,
        )
        .await?;
    Ok(Value::Array(hits.iter().map(hit_json).collect()))
}

/// The offline model of the demo: it extracts "my name is …", "I live in …",
/// "I work at/as …" and "my favourite … is …" (for extraction requests), and
/// otherwise answers from the facts the context step recalled.
fn offline_model() -> ScriptedModel {
    ScriptedModel::responder(|request| {
        let last = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
        if request.output_schema.is_some() {
            let said = last.lines().next().unwrap_or("").trim_start_matches("User:").to_lowercase();
            let mut facts = Vec::new();
            let mut name = "user".to_owned();
            for clause in said.split(['.', ',', '!', ';']).flat_map(|c| c.split(" and ")) {
                let c = clause.trim();
                let fact = |p: &str, v: &str| json!({ "subject": "", "predicate": p, "value": v.trim(), "confidence": 0.9, "scope": "user" });
                if let Some(v) = c.strip_prefix("my name is ").or_else(|| c.strip_prefix("i'm ")) {
                    name = capitalise(v.trim());
                    facts.push(fact("name", &name));
                } else if let Some(v) = c.strip_prefix("i live in ") {
                    facts.push(fact("lives in", &capitalise(v)));
                } else if let Some(v) = c.strip_prefix("i work at ").or_else(|| c.strip_prefix("i work as ")) {
                    facts.push(fact("works at", v));
                } else if let Some(rest) = c.strip_prefix("my favourite ")
                    && let Some((what, v)) = rest.split_once(" is ")
                {
                    facts.push(fact(&format!("favourite {what}"), v));
                }
            }
            for f in &mut facts {
                f["subject"] = json!(name);
            }
            return ScriptedReply::text(json!({ "facts": facts }).to_string());
        }
        let memory = request
            .messages
            .iter()
            .find(|m| m.role == Role::System && m.content.contains("earlier conversations"));
        match memory {
            Some(m) if last.contains('?') => ScriptedReply::text(format!(
                "From what I remember:{}",
                m.content.lines().skip(1).map(|l| format!("\n{l}")).collect::<String>()
            )),
            _ if last.contains('?') => ScriptedReply::text("I don't know that yet."),
            _ => ScriptedReply::text("Noted. I'll remember that."),
        }
    })
    .named("offline")
}

fn capitalise(s: &str) -> String {
    let s = s.trim();
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

async fn demo(db: PathBuf, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let mut config = RuntimeConfig::default();
    config.knowledge = KnowledgeConfig::default().extract_with("offline");
    let rt = Runtime::builder()
        .store(SqliteStore::open(&db).await?)
        .model(offline_model())
        .agent(
            AgentDefinition::new("assistant", "offline")
                .system_prompt("You remember what users tell you."),
        )
        .config(config)
        .build()?;
    let me = Principal::local();
    w!(out, "— session 1");
    let first = rt
        .open_session(me, "assistant", "demo", Some("monday"))
        .await?;
    let said = "Hi! My name is Ada, I live in Lyon and my favourite tea is sencha.";
    w!(out, "user: {said}");
    w!(out, "assistant: {}", rt.send(first.id, said).await?.text);
    let run = rt.run_due_tasks().await?;
    w!(out, "(background: {} extraction task ran)", run.completed);
    for f in rt
        .knowledge()
        .facts(&me, &AgentId::new("assistant"))
        .await?
    {
        w!(out, "  learned [{}] {}", f.layer(), f.text());
    }
    w!(
        out,
        "\n— session 2 (a new session: no chat history, only knowledge)"
    );
    let second = rt
        .open_session(me, "assistant", "demo", Some("tuesday"))
        .await?;
    let asked = "Where do I live, and which tea do I like?";
    w!(out, "user: {asked}");
    let reply = rt.send(second.id, asked).await?;
    w!(out, "assistant: {}", reply.text);
    let steps = rt.sessions().steps(me, reply.interaction_id).await?;
    if let Some(context) = steps
        .first()
        .and_then(|s| s.output_as::<ContextOutput>().ok().flatten())
    {
        let facts: Vec<&str> = context.facts.iter().map(|f| f.text.as_str()).collect();
        w!(
            out,
            "(the context step recorded the facts it used: {})",
            facts.join("; ")
        );
    }
    Ok(())
}

/// Runs the command line, writing results to `out`.
pub async fn run(args: Args, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let Some(command) = args.command else {
        let db = args.db.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("thinklio-memory-{}.db", std::process::id()))
        });
        let result = demo(db.clone(), out).await;
        crate::remove_database(&db);
        return result;
    };
    let db = args
        .db
        .ok_or_else(|| CliError::Usage("--db PATH is required".into()))?;
    let rt = runtime(SqliteStore::open(&db).await?, embedder(&args.embedder)?)?;
    match command {
        Command::Import { file, batch } => import(&rt, &file, batch).await,
        // Each line of the file names its own user, teams and k.
        Command::Search {
            agent,
            queries: Some(path),
            question: None,
            ..
        } => {
            let name = path.display().to_string();
            let file = std::fs::File::open(&path).map_err(|e| CliError::Io(name.clone(), e))?;
            for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.map_err(|e| CliError::Io(name.clone(), e))?;
                if line.trim().is_empty() {
                    continue;
                }
                let q: QueryLine = serde_json::from_str(&line).map_err(|e| CliError::Input {
                    path: name.clone(),
                    line: i + 1,
                    message: e.to_string(),
                })?;
                let hits = search(&rt, Some(&q.user), &q.teams, &agent, q.k, &q.question).await?;
                w!(out, "{hits}");
            }
            Ok(())
        }
        Command::Search {
            user,
            teams,
            agent,
            k,
            queries: None,
            question: Some(question),
        } => {
            let hits = search(&rt, user.as_deref(), &teams, &agent, k, &question).await?;
            w!(out, "{hits}");
            Ok(())
        }
        Command::Search { .. } => Err(CliError::Usage(
            "search takes exactly one of a question and --queries FILE".into(),
        )),
    }
}
