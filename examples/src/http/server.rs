//! The `http-server` example's program: a runtime on a SQLite file behind
//! the HTTP API and the web chat. Its `main` only parses arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_capabilities::builtin;
use thinklio_core::channel::ChannelRouter;
use thinklio_core::{
    AccountId, AccountPolicy, AgentDefinition, ChatModel, DirectoryStore, FunctionCapability,
    JobCallbacks, Runtime, SideEffect, StepMode,
};
use thinklio_store_sqlite::SqliteStore;

use super::keys::{ApiKeys, KeyScope};
use super::{HttpChannel, HttpConfig, HttpHost, prepare};
use crate::offline::{calculator, offline_model};

/// Thinklio over HTTP: the `/v1/` API, server-sent events and a web chat.
#[derive(Debug, Parser)]
pub struct ServerArgs {
    /// The SQLite file holding sessions, interactions, steps and API keys.
    #[arg(long, default_value = "thinklio.db")]
    pub db: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Requests each API key may make per minute.
    #[arg(long, default_value_t = 600)]
    pub requests_per_minute: u32,
    /// Where to serve `/metrics` (Prometheus text format), `/healthz` and
    /// `/readyz` for the operator; no metrics when left out. Metrics count
    /// every account's work, so they are never on `--addr`.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Prune finished work older than this many days, hourly: steps,
    /// events and summarised replies go, usage is rolled up by the hour
    /// (reports stay the same). Everything is kept when left out.
    #[arg(long, value_name = "DAYS")]
    pub retain_days: Option<u32>,
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<KeyCommand>,
}

/// API key management.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Creates an API key (and a new account unless `--account` is given)
    /// and prints its secret once.
    CreateKey {
        /// The account the key acts for.
        #[arg(long)]
        account: Option<AccountId>,
        /// What the key may do: `chat` or `admin`.
        #[arg(long, default_value = "admin")]
        scope: KeyScope,
        /// What the key is for.
        #[arg(long, default_value = "api")]
        label: String,
    },
    /// Lists an account's keys.
    ListKeys {
        /// The account.
        #[arg(long)]
        account: AccountId,
    },
    /// Revokes a key.
    RevokeKey {
        /// The account.
        #[arg(long)]
        account: AccountId,
        /// The key's id.
        id: String,
    },
}

#[derive(Deserialize, JsonSchema)]
struct WordCountArgs {
    /// The text to count the words of.
    text: String,
}

/// `word_count`: a capability that runs as a job (dispatch it with
/// `POST /v1/jobs`).
pub fn word_count() -> FunctionCapability {
    FunctionCapability::builder(
        "word_count",
        "Counts the words of a text, in the background.",
    )
    .side_effect(SideEffect::ReadOnly)
    .default_mode(StepMode::Deferred)
    .handler(|args: WordCountArgs| async move {
        Ok::<_, String>(serde_json::json!({ "words": args.text.split_whitespace().count() }))
    })
}

/// The keys the first start of a server on a new file made.
#[derive(Clone)]
pub struct FirstKeys {
    /// The new account.
    pub account: AccountId,
    /// The web chat's address with a `chat` key in its fragment.
    pub web_chat: String,
    /// An `admin` key, for the account's keys, usage and users.
    pub admin: String,
    /// The Agent Studio's address with the admin key in its fragment.
    pub studio: String,
}

impl std::fmt::Debug for FirstKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstKeys")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The host (its runtime, its keys).
    pub host: Arc<HttpHost>,
    /// The keys made when this start found a file that never had a key.
    pub first_keys: Option<FirstKeys>,
    /// Where `/metrics` is served, when asked for.
    pub metrics_addr: Option<SocketAddr>,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    _workers: Arc<(
        thinklio_core::JobWorker,
        thinklio_core::QueueWorker,
        Option<thinklio_core::RetentionWorker>,
    )>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Serves until the process is stopped or serving fails.
    pub async fn wait(mut self) -> Result<(), String> {
        self.wait_ref().await
    }

    async fn wait_ref(&mut self) -> Result<(), String> {
        match (&mut self.serve).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stops taking connections; the requests in flight finish (see
    /// [`Server::wait`]).
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stops gracefully within `deadline`: takes no new connections, shuts
    /// the runtime down ([`Runtime::shutdown`]: no new messages; the runs
    /// going on, which this one process would otherwise leave to its next
    /// start, finish), and waits for the requests in flight; those still
    /// running at the deadline are cut off.
    pub async fn shutdown(mut self, deadline: Duration) -> Result<(), String> {
        self.stop();
        let runtime = self.host.runtime.clone();
        let (stopped, served) = tokio::join!(
            runtime.shutdown(deadline),
            tokio::time::timeout(deadline, &mut self.serve)
        );
        match stopped {
            Ok(report) if !report.cut_off.is_empty() => tracing::warn!(
                cut_off = report.cut_off.len(),
                "runs still inside a step at the deadline were left for recovery"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the runtime did not shut down cleanly"),
        }
        match served {
            Ok(Ok(r)) => r.map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                self.serve.abort();
                Err(format!(
                    "requests still running after {} s were cut off",
                    deadline.as_secs()
                ))
            }
        }
    }
}

/// Creates an account (when `account` is none) and a key for it; returns both.
pub async fn create_key(
    store: &SqliteStore,
    keys: &ApiKeys,
    account: Option<AccountId>,
    scope: KeyScope,
    label: &str,
) -> Result<(AccountId, String), String> {
    let account = match account {
        Some(a) => a,
        None => {
            let a = AccountId::new();
            store
                .put_account(a, "default", AccountPolicy::default())
                .await
                .map_err(|e| e.to_string())?;
            a
        }
    };
    let (_, secret) = keys
        .create(account, scope, label)
        .await
        .map_err(|e| e.to_string())?;
    Ok((account, secret))
}

/// Builds the runtime and starts serving on `args.addr` (port 0 picks one).
pub async fn start(
    args: &ServerArgs,
    model: Option<(Arc<dyn ChatModel>, String)>,
) -> Result<Server, String> {
    let store = SqliteStore::open(&args.db)
        .await
        .map_err(|e| e.to_string())?;
    let keys = ApiKeys::open(&args.db).map_err(|e| e.to_string())?;
    let (model, model_id) =
        model.unwrap_or_else(|| (Arc::new(offline_model()), "offline".to_owned()));
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Callback tokens are HMACs under this secret: keep it across restarts
    // (THINKLIO_JOB_SECRET) for callbacks of jobs dispatched before one.
    let secret = match std::env::var("THINKLIO_JOB_SECRET") {
        Ok(s) if !s.is_empty() => s.into_bytes(),
        _ => {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).map_err(|e| e.to_string())?;
            b.to_vec()
        }
    };
    let router = ChannelRouter::new();
    let channel = HttpChannel::new();
    let todos: std::sync::Arc<dyn thinklio_core::TodoStore> = std::sync::Arc::new(store.clone());
    let mut builder = prepare(
        Runtime::builder().store(store.clone()).model_arc(model),
        &router,
        &channel,
    );
    for todo in builtin::todo_list(todos) {
        builder = builder.capability(todo);
    }
    let runtime = builder
        .prices(crate::offline::prices())
        .capability(calculator())
        .capability(builtin::clock())
        .capability(word_count())
        .agent(
            AgentDefinition::new("assistant", model_id)
                .system_prompt(
                    "You are Thinklio's web assistant. Use the calculator for arithmetic, the clock for \
                     the date and time, and the todo list for the user's todos. Answer briefly.",
                )
                .capabilities(["calculator", "clock", "word_count", "todo_add", "todo_list"])
                // Calls that change something (adding a todo) wait for the
                // user's decision.
                .approval_mode(thinklio_core::approval::ApprovalMode::Draft),
        )
        .job_callbacks(JobCallbacks::new(format!("http://{addr}/v1/jobs/{{job}}/report"), secret))
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime.recover().await.map_err(|e| e.to_string())?;
    if report.resumed > 0 {
        tracing::info!(resumed = report.resumed, "resumed interrupted interactions");
    }
    let workers = Arc::new((
        runtime.spawn_job_worker(Duration::from_millis(500)),
        runtime.spawn_queue_worker(Duration::from_millis(500)),
        crate::ops::retention(&runtime, args.retain_days),
    ));
    let running: crate::ops::Workers = {
        let workers = Arc::downgrade(&workers);
        Arc::new(move || {
            let w = workers.upgrade();
            let mut running = vec![
                ("jobs", w.as_ref().is_some_and(|w| w.0.is_running())),
                ("queue", w.as_ref().is_some_and(|w| w.1.is_running())),
            ];
            if let Some(retention) = w.as_ref().and_then(|w| w.2.as_ref()) {
                running.push(("retention", retention.is_running()));
            }
            running
        })
    };
    let ops = crate::ops::Ops::new(runtime.clone(), running);
    let (shutdown, _) = tokio::sync::watch::channel(false);
    let metrics_addr = match args.metrics_addr {
        None => None,
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| format!("cannot listen on {at}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            let ops = ops.clone().with_metrics(crate::ops::prometheus()?);
            let mut stopping = shutdown.subscribe();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stopping.wait_for(|s| *s).await;
                };
                if let Err(e) = crate::ops::serve(ops, listener, stopped).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
            Some(bound)
        }
    };
    // Keys are made unasked only on a new file (no key ever, no account): a
    // file whose keys were all revoked, or whose accounts another host
    // made, gets none (`create-key` makes one).
    let used = keys.any_ever().await.map_err(|e| e.to_string())?
        || keys.any_account().await.map_err(|e| e.to_string())?;
    let first_keys = if used {
        None
    } else {
        let (account, admin) = create_key(&store, &keys, None, KeyScope::Admin, "admin").await?;
        let (_, chat) =
            create_key(&store, &keys, Some(account), KeyScope::Chat, "web chat").await?;
        Some(FirstKeys {
            account,
            web_chat: format!("http://{addr}/#key={chat}"),
            studio: format!("http://{addr}/studio#key={admin}"),
            admin,
        })
    };
    let host = HttpHost::new(
        runtime,
        keys,
        channel,
        HttpConfig::new("assistant")
            .requests_per_minute(args.requests_per_minute)
            .dispatchable(["word_count"]),
    );
    let serve = {
        let (host, mut stopping) = (Arc::clone(&host), shutdown.subscribe());
        tokio::spawn(async move {
            host.serve_with(listener, ops.router(), async move {
                let _ = stopping.wait_for(|s| *s).await;
            })
            .await
        })
    };
    Ok(Server {
        addr,
        host,
        first_keys,
        metrics_addr,
        serve,
        shutdown,
        _workers: workers,
    })
}

/// The program: a key command, or serving until Ctrl-C.
pub async fn run(args: ServerArgs) -> Result<(), String> {
    if let Some(command) = &args.command {
        let store = SqliteStore::open(&args.db)
            .await
            .map_err(|e| e.to_string())?;
        let keys = ApiKeys::open(&args.db).map_err(|e| e.to_string())?;
        match command {
            KeyCommand::CreateKey {
                account,
                scope,
                label,
            } => {
                let (account, secret) = create_key(&store, &keys, *account, *scope, label).await?;
                println!(
                    "account {account}\nkey     {secret} ({})\n(the key is shown this once)",
                    scope.as_str()
                );
            }
            KeyCommand::ListKeys { account } => {
                let list = keys.list(*account).await.map_err(|e| e.to_string())?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?
                );
            }
            KeyCommand::RevokeKey { account, id } => {
                if !keys.revoke(*account, id).await.map_err(|e| e.to_string())? {
                    return Err(format!("account {account} has no live key {id}"));
                }
                println!("revoked {id}");
            }
        }
        return Ok(());
    }
    let mut server = start(&args, Some(crate::offline::model_from_env()?)).await?;
    eprintln!(
        "Thinklio listens on http://{} (API under /v1/, OpenAPI at /openapi.json)",
        server.addr
    );
    if let Some(at) = server.metrics_addr {
        eprintln!("metrics on http://{at}/metrics (and /healthz, /readyz)");
    }
    match &server.first_keys {
        Some(first) => eprintln!(
            "admin key: {}\nweb chat: {}\nagent studio: {}\n(the new account {}: an admin key for its keys, usage, users \
             and agents, and a chat key in the web chat's link; both are shown this once)",
            first.admin, first.web_chat, first.studio, first.account
        ),
        None => eprintln!(
            "web chat: http://{}/ (paste a chat key; create one with `cargo run --example http-server -- --db {} \
             create-key --account ACCOUNT --scope chat`)",
            server.addr,
            args.db.display()
        ),
    }
    tokio::select! {
        r = crate::ops::stop_signal() => r?,
        r = server.wait_ref() => return r,
    }
    eprintln!("stopping: letting the running steps and the requests in flight finish");
    server.shutdown(Duration::from_secs(30)).await
}
