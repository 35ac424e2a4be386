//! Thinklio as a Telegram bot: an assistant with a calculator, a clock and
//! a background word count, durable on a SQLite file.
//!
//! ```text
//! export TELEGRAM_BOT_TOKEN=123456:ABC...      # from @BotFather
//! cargo run --example telegram-bot -- --db bot.db
//! ```
//!
//! Long polling by default; with `TELEGRAM_WEBHOOK_URL` (and `--listen`),
//! Telegram posts updates to this process instead. `TELEGRAM_API_URL`
//! points the bot at a self-hosted Bot API server. The model comes from
//! `THINKLIO_MODEL` (offline scripted model without it). See
//! `examples/telegram-bot/README.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use thinklio_capabilities::builtin;
use thinklio_core::channel::ChannelRouter;
use thinklio_core::{AccountId, AccountPolicy, AgentDefinition, DirectoryStore, Runtime};
use thinklio_examples::http::server::word_count;
use thinklio_examples::offline::{calculator, model_from_env};
use thinklio_examples::telegram::{BotOptions, TelegramBot, TelegramChannel, client};
use thinklio_store_sqlite::SqliteStore;

/// Thinklio on Telegram.
#[derive(Parser)]
struct Args {
    /// The SQLite file holding users, sessions, interactions and steps.
    #[arg(long, default_value = "telegram-bot.db")]
    db: PathBuf,
    /// The account Telegram users join (created when missing); one derived
    /// from the bot's id when left out.
    #[arg(long)]
    account: Option<AccountId>,
    /// The bot token (from @BotFather). Never printed.
    #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
    token: String,
    /// A self-hosted Bot API server, e.g. http://localhost:8081.
    #[arg(long, env = "TELEGRAM_API_URL")]
    api_url: Option<String>,
    /// Webhook mode: the public HTTPS address Telegram posts updates to.
    #[arg(long, env = "TELEGRAM_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Webhook mode: where this process listens (behind your HTTPS proxy).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Webhook mode: the secret token Telegram sends with each update.
    #[arg(long, env = "TELEGRAM_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Serve only these Telegram user ids (comma-separated); everyone when
    /// left out.
    #[arg(long, env = "TELEGRAM_ALLOWED_USERS", value_delimiter = ',')]
    allowed_users: Vec<String>,
    /// Where to serve `/metrics` (Prometheus text format), `/healthz` and
    /// `/readyz` for the operator; not served when left out.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Prune finished work older than this many days, hourly (usage is
    /// rolled up by the hour, reports stay the same); everything is kept
    /// when left out.
    #[arg(long, value_name = "DAYS")]
    retain_days: Option<u32>,
    #[command(flatten)]
    traces: thinklio_examples::TraceArgs,
}

async fn run(args: Args) -> Result<(), String> {
    let (model, model_id) = model_from_env()?;
    let store = SqliteStore::open(&args.db)
        .await
        .map_err(|e| e.to_string())?;
    let bot_id = args.token.split(':').next().unwrap_or_default();
    let account = args.account.unwrap_or_else(|| {
        AccountId::from_uuid(uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("telegram-bot:{bot_id}").as_bytes(),
        ))
    });
    store
        .put_account(account, "telegram", AccountPolicy::default())
        .await
        .map_err(|e| e.to_string())?;
    let bot = client(&args.token, args.api_url.as_deref()).map_err(|e| e.to_string())?;
    let channel = TelegramChannel::new(bot.clone());
    let router = ChannelRouter::new();
    router.add(channel.clone());
    let runtime = Runtime::builder()
        .store(store)
        .prices(thinklio_examples::offline::prices())
        .model_arc(model)
        .capability(calculator())
        .capability(builtin::clock())
        .capability(word_count())
        .agent(
            AgentDefinition::new("assistant", model_id)
                .system_prompt("You are a helpful assistant on Telegram. Answer briefly.")
                .capabilities(["calculator", "clock", "word_count"]),
        )
        .reply_sink(router)
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime.recover().await.map_err(|e| e.to_string())?;
    if report.resumed > 0 {
        eprintln!("resumed {} interrupted interaction(s)", report.resumed);
    }
    let workers = std::sync::Arc::new((
        runtime.spawn_job_worker(Duration::from_secs(1)),
        runtime.spawn_queue_worker(Duration::from_secs(1)),
        thinklio_examples::ops::retention(&runtime, args.retain_days),
    ));
    if let Some(at) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .map_err(|e| format!("cannot listen on {at}: {e}"))?;
        let running: thinklio_examples::ops::Workers = {
            let workers = std::sync::Arc::clone(&workers);
            std::sync::Arc::new(move || {
                let mut running = vec![
                    ("jobs", workers.0.is_running()),
                    ("queue", workers.1.is_running()),
                ];
                if let Some(retention) = &workers.2 {
                    running.push(("retention", retention.is_running()));
                }
                running
            })
        };
        let ops = thinklio_examples::ops::Ops::new(runtime.clone(), running)
            .with_metrics(thinklio_examples::ops::prometheus()?);
        eprintln!(
            "metrics on http://{}/metrics (and /healthz, /readyz)",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        tokio::spawn(async move {
            // It serves until the process ends: /readyz says 503 while the
            // runtime shuts down.
            let stopped = std::future::pending::<()>();
            if let Err(e) = thinklio_examples::ops::serve(ops, listener, stopped).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let mut options = BotOptions::default();
    if !args.allowed_users.is_empty() {
        options = options.allow_only(args.allowed_users.iter().map(|u| u.trim().to_owned()));
    }
    let telegram = TelegramBot::with_options(runtime.clone(), bot, "assistant", account, options);
    let _redelivery =
        telegram.spawn_redelivery(channel, Duration::from_secs(60), Duration::from_secs(30));
    match args.webhook_url {
        None => {
            eprintln!("Telegram bot running (long polling); account {account}. Ctrl-C stops it.");
            let polling = telegram.spawn_polling();
            thinklio_examples::ops::stop_signal().await?;
            // No more updates are taken; what was taken is recorded and
            // answered by the next start (an update not yet confirmed comes
            // again).
            polling.abort();
        }
        Some(url) => {
            let secret = args
                .webhook_secret
                .ok_or("webhook mode needs TELEGRAM_WEBHOOK_SECRET (1-256 of A-Z a-z 0-9 _ -)")?;
            let app = telegram
                .webhook(&url, &secret)
                .await
                .map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "Telegram bot running (webhook {url}, listening on {}); account {account}.",
                args.listen
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = thinklio_examples::ops::stop_signal().await;
                })
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    eprintln!("stopping: letting the running steps finish");
    let report = runtime
        .shutdown(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "stopped: {} run(s) ended between steps, {} cut off",
        report.stopped,
        report.cut_off.len()
    );
    drop(workers);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let traces = match thinklio_examples::init_tracing(&args.traces, "thinklio-telegram") {
        Ok(traces) => traces,
        Err(e) => return thinklio_examples::exit_with(Err(e)),
    };
    let result = run(args).await;
    traces.finish().await;
    thinklio_examples::exit_with(result)
}
