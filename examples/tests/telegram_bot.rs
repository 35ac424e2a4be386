//! The Telegram bot against a local Bot API server that speaks the Bot API's
//! wire format (`POST /bot<token>/<method>` with JSON, answers
//! `{"ok": true, "result": …}`; `getUpdates` long-polls with `offset` and
//! `timeout`; updates, messages, chats and users as the Bot API documents
//! them): two users, their replies, `/usage`, `/forget`, a reply longer than
//! a Telegram message, a job's follow-up, and a bot killed mid-conversation
//! that, restarted, loses no message and answers none twice. Webhook mode
//! takes the same updates over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use serde_json::{Value, json};
use thinklio_core::channel::{AccountMembers, ChannelRouter};
use thinklio_core::{
    AccountId, AccountPolicy, AgentDefinition, ChatModel, ChatRequest, ChatResponse, ChatStream,
    DirectoryStore, FactOwner, ModelError, NewFact, Principal, Role, Runtime,
};
use thinklio_examples::http::server::word_count;
use thinklio_examples::telegram::{
    BotOptions, MESSAGE_LIMIT, MIN_POLL_INTERVAL, TelegramBot, TelegramChannel, client,
};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use tokio::sync::{Notify, watch};

const TOKEN: &str = "4839574812:AAFD39kkdpWt3ywyRZergyOLMaJhac60qc";

/// How the fake server answers `sendChatAction`.
#[derive(Default, Clone, Copy, PartialEq)]
enum ChatActions {
    /// `{"ok": true, "result": true}`.
    #[default]
    Answer,
    /// `{"ok": false, "error_code": 400, ...}`, as Telegram answers for a
    /// chat the bot may not post in.
    Refuse,
    /// Never answers.
    Hang,
}

/// What the fake Bot API server holds.
#[derive(Default)]
struct Telegram {
    /// How chat actions are answered.
    chat_actions: ChatActions,
    /// `getUpdates` answers at once, without long polling.
    instant_polls: bool,
    /// When each `getUpdates` came.
    polls: Vec<std::time::Instant>,
    /// Chats whose `sendMessage` is refused: the user blocked the bot.
    blocked: std::collections::HashSet<i64>,
    /// Updates not yet confirmed by an offset.
    pending: VecDeque<Value>,
    next_update: i64,
    next_message: i64,
    /// (chat, text) of every `sendMessage`, in order.
    sent: Vec<(i64, String)>,
    /// (chat, action) of every `sendChatAction`.
    actions: Vec<(i64, String)>,
    webhook: Option<(String, String)>,
}

#[derive(Clone, Default)]
struct FakeBotApi {
    state: Arc<Mutex<Telegram>>,
    /// Rung when an update arrives (long polls wake) or a message is sent.
    news: Arc<Notify>,
}

fn ok(result: Value) -> Json<Value> {
    Json(json!({ "ok": true, "result": result }))
}

fn user(id: i64, name: &str) -> Value {
    json!({ "id": id, "is_bot": false, "first_name": name, "language_code": "en" })
}

/// A request's parameters: the Bot API takes them as JSON, or as
/// `multipart/form-data` (teloxide sends `setWebhook` so, as it may carry a
/// certificate), where a field holding JSON is that JSON.
async fn parameters(request: axum::extract::Request) -> Value {
    use axum::extract::FromRequest;
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
        let mut form = axum::extract::Multipart::from_request(request, &())
            .await
            .unwrap();
        let mut out = serde_json::Map::new();
        while let Some(field) = form.next_field().await.unwrap() {
            let name = field.name().unwrap().to_owned();
            let text = field.text().await.unwrap();
            out.insert(
                name,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            );
        }
        return Value::Object(out);
    }
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    if bytes.is_empty() {
        return Value::Null;
    }
    assert!(
        content_type.starts_with("application/json"),
        "unexpected content type {content_type}"
    );
    serde_json::from_slice(&bytes).unwrap()
}

async fn bot_api(
    State(api): State<FakeBotApi>,
    UrlPath((bot, method)): UrlPath<(String, String)>,
    request: axum::extract::Request,
) -> (axum::http::StatusCode, Json<Value>) {
    if bot != format!("bot{TOKEN}") {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            Json(json!({ "ok": false, "error_code": 401, "description": "Unauthorized" })),
        );
    }
    let body = parameters(request).await;
    let now = jiff::Timestamp::now().as_second();
    let answer = match method.to_lowercase().as_str() {
        "getupdates" => {
            let offset = body["offset"].as_i64().unwrap_or(0);
            let instant = {
                let mut s = api.state.lock().unwrap();
                s.polls.push(std::time::Instant::now());
                s.instant_polls
            };
            let timeout = if instant {
                0
            } else {
                body["timeout"].as_u64().unwrap_or(0).min(10)
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let notified = api.news.notified();
                {
                    let mut s = api.state.lock().unwrap();
                    // An offset confirms every update before it.
                    let before = s.pending.len();
                    s.pending
                        .retain(|u| u["update_id"].as_i64().unwrap() >= offset);
                    if s.pending.len() < before {
                        api.news.notify_waiters();
                    }
                    if !s.pending.is_empty() || tokio::time::Instant::now() >= deadline {
                        break ok(Value::Array(s.pending.iter().cloned().collect()));
                    }
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        }
        "sendmessage" => {
            let chat = body["chat_id"].as_i64().unwrap();
            let text = body["text"].as_str().unwrap().to_owned();
            let mut s = api.state.lock().unwrap();
            if s.blocked.contains(&chat) {
                return (
                    axum::http::StatusCode::FORBIDDEN,
                    Json(
                        json!({ "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user" }),
                    ),
                );
            }
            assert!(
                text.encode_utf16().count() <= 4096,
                "Telegram refuses messages over 4096 characters"
            );
            s.next_message += 1;
            s.sent.push((chat, text.clone()));
            let message = json!({
                "message_id": s.next_message,
                "date": now,
                "chat": { "id": chat, "type": "private", "first_name": "User" },
                "from": { "id": 4839574812_i64, "is_bot": true, "first_name": "Thinklio", "username": "thinklio_bot" },
                "text": text,
            });
            drop(s);
            api.news.notify_waiters();
            ok(message)
        }
        "sendchataction" => {
            let chat = body["chat_id"].as_i64().unwrap();
            let action = body["action"].as_str().unwrap().to_owned();
            let how = {
                let mut s = api.state.lock().unwrap();
                s.actions.push((chat, action));
                s.chat_actions
            };
            match how {
                ChatActions::Answer => ok(json!(true)),
                ChatActions::Refuse => {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        Json(
                            json!({ "ok": false, "error_code": 400, "description": "Bad Request: not enough rights to send chat actions" }),
                        ),
                    );
                }
                ChatActions::Hang => std::future::pending().await,
            }
        }
        "setwebhook" => {
            api.state.lock().unwrap().webhook = Some((
                body["url"].as_str().unwrap().to_owned(),
                body["secret_token"].as_str().unwrap_or_default().to_owned(),
            ));
            ok(json!(true))
        }
        other => {
            return (
                axum::http::StatusCode::NOT_FOUND,
                Json(
                    json!({ "ok": false, "error_code": 404, "description": format!("Not Found: method {other} not found") }),
                ),
            );
        }
    };
    (axum::http::StatusCode::OK, answer)
}

impl FakeBotApi {
    async fn start() -> (FakeBotApi, String) {
        let api = FakeBotApi::default();
        let app = axum::Router::new()
            .route("/{bot}/{method}", axum::routing::post(bot_api).get(bot_api))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (api, format!("http://{addr}"))
    }

    /// A user writes in their private chat (chat id = user id).
    fn update(&self, from: i64, name: &str, text: &str) -> Value {
        let mut s = self.state.lock().unwrap();
        s.next_update += 1;
        s.next_message += 1;
        let mut message = json!({
            "message_id": s.next_message,
            "from": user(from, name),
            "chat": { "id": from, "type": "private", "first_name": name },
            "date": jiff::Timestamp::now().as_second(),
            "text": text,
        });
        if text.starts_with('/') {
            let len = text.split_whitespace().next().unwrap().len();
            message["entities"] = json!([{ "type": "bot_command", "offset": 0, "length": len }]);
        }
        json!({ "update_id": 500_000 + s.next_update, "message": message })
    }

    fn say(&self, from: i64, name: &str, text: &str) {
        let update = self.update(from, name, text);
        self.push(update);
    }

    fn push(&self, update: Value) {
        self.state.lock().unwrap().pending.push_back(update);
        self.news.notify_waiters();
    }

    /// A user sends a sticker (no text, nothing the bot reads).
    fn sticker(&self, from: i64, name: &str) {
        let mut update = self.update(from, name, "");
        let message = update["message"].as_object_mut().unwrap();
        message.remove("text");
        message.insert(
            "sticker".into(),
            json!({
                "file_id": "CAACAgIAAxkBAAEB", "file_unique_id": "AgADrQAD",
                "type": "regular", "width": 512, "height": 512,
                "is_animated": false, "is_video": false, "file_size": 20480
            }),
        );
        self.push(update);
    }

    /// Waits until every update was confirmed by an offset.
    async fn wait_confirmed(&self) {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let notified = self.news.notified();
                if self.state.lock().unwrap().pending.is_empty() {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("updates stay unconfirmed");
    }

    fn sent_to(&self, chat: i64) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.sent
            .iter()
            .filter(|(c, _)| *c == chat)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Waits until `chat` has received `n` messages; returns them all.
    async fn wait_for(&self, chat: i64, n: usize) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let notified = self.news.notified();
                let sent = self.sent_to(chat);
                if sent.len() >= n {
                    return sent;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("chat {chat} got only {:?}", self.sent_to(chat)))
    }
}

/// A model that echoes, writes a long answer for `long`, dispatches a word
/// count for `count …`, reports a job's result in its follow-up, and holds
/// `slow …` until its gate opens.
struct BotModel {
    scripted: ScriptedModel,
    open: watch::Receiver<bool>,
}

fn long_text() -> String {
    (0..)
        .map(|i| format!("word{i} "))
        .take(700)
        .collect::<String>()
}

fn bot_model(open: watch::Receiver<bool>) -> BotModel {
    let scripted = ScriptedModel::responder(|request| {
        let last = request.messages.last().unwrap();
        if last.role == Role::Tool {
            return ScriptedReply::text("I'll get back to you with the count.");
        }
        let text = last.content.as_str();
        if text.starts_with("[job ") {
            let report = request
                .messages
                .iter()
                .find(|m| {
                    m.role == Role::System && m.content.starts_with("Deferred work reported back")
                })
                .map(|m| m.content.clone())
                .unwrap_or_default();
            return ScriptedReply::text(format!("Your count is back. {report}"));
        }
        if text == "long" {
            return ScriptedReply::text(long_text());
        }
        if let Some(words) = text.strip_prefix("count ") {
            return ScriptedReply::tool_call(
                "c1",
                "word_count",
                json!({ "text": words }).to_string(),
            );
        }
        ScriptedReply::text(format!("echo: {text}"))
    });
    BotModel { scripted, open }
}

impl BotModel {
    async fn gate(&self, request: &ChatRequest) {
        let last = request.messages.last().unwrap();
        if last.role == Role::User && last.content.starts_with("slow") {
            let mut open = self.open.clone();
            let _ = open.wait_for(|o| *o).await;
        }
    }
}

#[async_trait]
impl ChatModel for BotModel {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        self.gate(request).await;
        self.scripted.chat(request).await
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        self.gate(request).await;
        self.scripted.chat_stream(request).await
    }
}

const ADA: i64 = 1_001;
const BOB: i64 = 2_002;

/// The bot in its own tokio runtime, so that stopping it drops every task
/// it has at once, as a crash would.
struct RunningBot {
    tasks: tokio::runtime::Runtime,
    runtime: Runtime,
    telegram: Arc<TelegramBot>,
}

async fn start_bot(db: &Path, api_url: &str, account: AccountId, open: bool) -> RunningBot {
    start_bot_with(db, api_url, account, open, BotOptions::default()).await
}

async fn start_bot_with(
    db: &Path,
    api_url: &str,
    account: AccountId,
    open: bool,
    options: BotOptions,
) -> RunningBot {
    let tasks = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (gate, rx) = watch::channel(open);
    let (db, api_url) = (db.to_owned(), api_url.to_owned());
    let runtime = tasks
        .spawn(async move {
            let store = SqliteStore::open(&db).await.unwrap();
            store
                .put_account(account, "telegram", AccountPolicy::default())
                .await
                .unwrap();
            let bot = client(TOKEN, Some(&api_url)).unwrap();
            let channel = TelegramChannel::new(bot.clone());
            assert!(!format!("{channel:?}").contains(TOKEN));
            let router = ChannelRouter::new();
            router.add(channel);
            let runtime = Runtime::builder()
                .store(store)
                .model(bot_model(rx))
                .capability(word_count())
                .agent(AgentDefinition::new("assistant", "bot-model").capabilities(["word_count"]))
                .reply_sink(router)
                .build()
                .unwrap();
            runtime.recover().await.unwrap();
            let telegram =
                TelegramBot::with_options(runtime.clone(), bot, "assistant", account, options);
            assert!(!format!("{telegram:?}").contains(TOKEN));
            let worker = runtime.spawn_job_worker(Duration::from_millis(50));
            std::mem::forget(worker); // runs until the bot's tasks are dropped
            telegram.spawn_polling();
            // The gate lives as long as the bot.
            std::mem::forget(gate);
            (runtime, telegram)
        })
        .await
        .unwrap();
    let (runtime, telegram) = runtime;
    RunningBot {
        tasks,
        runtime,
        telegram,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_commands_long_replies_follow_ups_and_a_restart() {
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let logs = Arc::clone(&logs);
        move || LogWriter(Arc::clone(&logs))
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(writer)
        .try_init();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.db");
    let (api, url) = FakeBotApi::start().await;
    let account = AccountId::new();
    // This bot's model holds any `slow …` message: it is killed while thinking.
    let bot = start_bot(&db, &url, account, false).await;

    // Two users, each answered in their own chat.
    api.say(ADA, "Ada", "hello");
    api.say(BOB, "Bob", "hi there");
    assert_eq!(api.wait_for(ADA, 1).await, ["echo: hello"]);
    assert_eq!(api.wait_for(BOB, 1).await, ["echo: hi there"]);
    {
        let s = api.state.lock().unwrap();
        for chat in [ADA, BOB] {
            assert!(
                s.actions.contains(&(chat, "typing".to_owned())),
                "no typing indicator in {chat}"
            );
        }
    }

    // A reply longer than a Telegram message arrives in parts, in order.
    api.say(ADA, "Ada", "long");
    let sent = api.wait_for(ADA, 3).await;
    assert_eq!(sent[1..].concat(), long_text());
    assert!(long_text().len() > MESSAGE_LIMIT && sent[1].encode_utf16().count() <= MESSAGE_LIMIT);

    // A job: the answer says it is under way; the result comes as a new message.
    api.say(ADA, "Ada", "count one two three four");
    let sent = api.wait_for(ADA, 5).await;
    assert_eq!(sent[3], "I'll get back to you with the count.");
    assert!(
        sent[4].starts_with("Your count is back.") && sent[4].contains(r#"{"words":4}"#),
        "{}",
        sent[4]
    );

    // /usage: each user's own spend.
    let ada_user = AccountMembers::new(account).user_id("telegram", &ADA.to_string());
    api.say(ADA, "Ada", "/usage");
    api.say(BOB, "Bob", "/usage");
    let ada_usage = api.wait_for(ADA, 6).await.pop().unwrap();
    let bob_usage = api.wait_for(BOB, 2).await.pop().unwrap();
    // Ada: hello, long, count (two calls) and the follow-up; Bob: one.
    assert!(ada_usage.starts_with("This month: 5 calls"), "{ada_usage}");
    assert!(bob_usage.starts_with("This month: 1 calls"), "{bob_usage}");

    // /forget deletes what was learned about the user, and only that user.
    let ada = Principal::new(account, ada_user);
    bot.runtime
        .add_fact(
            &ada,
            NewFact::new(
                account,
                FactOwner::User(ada_user),
                "Ada",
                "likes",
                "green tea",
            ),
        )
        .await
        .unwrap();
    let bob_user = AccountMembers::new(account).user_id("telegram", &BOB.to_string());
    let bob_sessions = bot
        .runtime
        .store()
        .sessions_of_user(bob_user)
        .await
        .unwrap();
    api.say(ADA, "Ada", "/forget");
    let forgot = api.wait_for(ADA, 7).await.pop().unwrap();
    assert!(
        forgot.starts_with("Done: I deleted everything I held about you: 1 conversation(s), 4 message(s), 1 job(s) and the 1 fact(s)"),
        "{forgot}"
    );
    let left = bot
        .runtime
        .export_user_facts(account, ada_user)
        .await
        .unwrap();
    assert!(!left.to_string().contains("green tea"));
    let store = bot.runtime.store();
    assert!(
        store.sessions_of_user(ada_user).await.unwrap().is_empty(),
        "her conversations are gone"
    );
    assert_eq!(
        store.role(account, ada_user).await.unwrap(),
        None,
        "and her membership"
    );
    assert!(
        store
            .unfinished_jobs()
            .await
            .unwrap()
            .iter()
            .all(|j| j.principal.user != ada_user),
        "and her jobs"
    );
    assert_eq!(
        store.sessions_of_user(bob_user).await.unwrap(),
        bob_sessions,
        "Bob keeps everything"
    );

    // A message the runtime refuses (over its 64 KiB limit) is answered with
    // the reason and does not hold up the next one.
    api.say(BOB, "Bob", &"x".repeat(70 * 1024));
    api.say(BOB, "Bob", "still there?");
    let bob = api.wait_for(BOB, 4).await;
    assert!(
        bob[2].starts_with("I cannot take this message: the message has 71680 bytes"),
        "{}",
        bob[2]
    );
    assert_eq!(bob[3], "echo: still there?");

    // /new: the next message starts a session that has not seen the earlier ones.
    api.say(ADA, "Ada", "after forgetting");
    assert_eq!(
        api.wait_for(ADA, 8).await.pop().unwrap(),
        "echo: after forgetting",
        "a forgotten user starts afresh"
    );
    let before = bot
        .runtime
        .store()
        .sessions_of_user(ada_user)
        .await
        .unwrap()
        .len();
    api.say(ADA, "Ada", "/new");
    assert_eq!(
        api.wait_for(ADA, 9).await.pop().unwrap(),
        "Started a new conversation."
    );
    api.say(ADA, "Ada", "fresh start");
    assert_eq!(
        api.wait_for(ADA, 10).await.pop().unwrap(),
        "echo: fresh start"
    );
    let sessions = bot
        .runtime
        .store()
        .sessions_of_user(ada_user)
        .await
        .unwrap();
    assert_eq!(sessions.len(), before + 1);

    // The bot is killed while it thinks about Ada's message; Bob writes while it is down.
    api.say(ADA, "Ada", "slow question");
    wait_until_thinking(&bot.runtime, "slow question").await;
    bot.tasks.shutdown_background();
    api.say(BOB, "Bob", "are you there?");

    let second = start_bot(&db, &url, account, true).await;
    api.say(ADA, "Ada", "after restart");
    let ada = api.wait_for(ADA, 12).await;
    let bob = api.wait_for(BOB, 5).await;
    assert_eq!(&ada[10..], ["echo: slow question", "echo: after restart"]);
    assert_eq!(bob[4], "echo: are you there?");

    // Nothing was answered twice: every reply is unique in its chat, and
    // nothing more arrives (the next message is answered next).
    api.say(BOB, "Bob", "last one");
    let bob = api.wait_for(BOB, 6).await;
    assert_eq!(bob.len(), 6, "{bob:?}");
    assert_eq!(bob[5], "echo: last one");
    for chat in [ADA, BOB] {
        let sent = api.sent_to(chat);
        let mut unique = sent.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            sent.len(),
            "chat {chat} got a reply twice: {sent:?}"
        );
    }
    assert_eq!(api.sent_to(ADA).len(), 12);
    // Nothing waits in the outbox once the last reply is marked delivered.
    let mut events = second.runtime.subscribe();
    while !second
        .runtime
        .undelivered_replies()
        .await
        .unwrap()
        .is_empty()
    {
        tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("a reply stays undelivered")
            .unwrap();
    }
    second.tasks.shutdown_background();

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains(TOKEN), "the bot token reached a log line");
}

/// Waits until `text`'s interaction has a `think` step running.
async fn wait_until_thinking(runtime: &Runtime, text: &str) {
    let mut events = runtime.subscribe();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let e = events.recv().await.unwrap();
            if e.kind == thinklio_core::EventKind::StepStarted && e.payload["kind"] == "think" {
                let i = runtime
                    .store()
                    .interaction(e.interaction_id.unwrap())
                    .await
                    .unwrap();
                if i.input == text {
                    return;
                }
            }
        }
    })
    .await
    .unwrap();
}

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_takes_updates_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hook.db");
    let (api, url) = FakeBotApi::start().await;
    let store = SqliteStore::open(&db).await.unwrap();
    let account = AccountId::new();
    store
        .put_account(account, "telegram", AccountPolicy::default())
        .await
        .unwrap();
    let bot = client(TOKEN, Some(&url)).unwrap();
    let router = ChannelRouter::new();
    router.add(TelegramChannel::new(bot.clone()));
    let (_gate, rx) = watch::channel(true);
    let runtime = Runtime::builder()
        .store(store)
        .model(bot_model(rx))
        .agent(AgentDefinition::new("assistant", "bot-model"))
        .reply_sink(router)
        .build()
        .unwrap();
    let telegram = TelegramBot::new(runtime, bot, "assistant", account);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/telegram/updates", listener.local_addr().unwrap());
    let app = telegram.webhook(&hook, "s3cret-token").await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(
        api.state.lock().unwrap().webhook,
        Some((hook.clone(), "s3cret-token".to_owned())),
        "setWebhook was not called with the URL and secret"
    );
    let http = reqwest::Client::new();
    let update = api.update(ADA, "Ada", "by webhook");
    let refused = http.post(&hook).json(&update).send().await.unwrap();
    assert_eq!(
        refused.status(),
        401,
        "an update without the secret token is refused"
    );
    for _ in 0..2 {
        // Telegram may deliver an update twice; it is answered once.
        let response = http
            .post(&hook)
            .header("X-Telegram-Bot-Api-Secret-Token", "s3cret-token")
            .json(&update)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // The chat's messages are answered in order: once the next one is
    // answered, the second delivery of the first has been handled too.
    let next = api.update(ADA, "Ada", "and again");
    let response = http
        .post(&hook)
        .header("X-Telegram-Bot-Api-Secret-Token", "s3cret-token")
        .json(&next)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        api.wait_for(ADA, 2).await,
        ["echo: by webhook", "echo: and again"]
    );
}

/// Captures this test process's log lines.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let logs = Arc::clone(&logs);
        move || LogWriter(Arc::clone(&logs))
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(writer)
        .try_init();
    logs
}

async fn a_failing_typing_indicator_never_holds_up_an_answer(how: ChatActions) {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = FakeBotApi::start().await;
    {
        let mut s = api.state.lock().unwrap();
        s.chat_actions = how;
        // A server that answers `getUpdates` at once, with nothing.
        s.instant_polls = true;
    }
    let started = std::time::Instant::now();
    let options = BotOptions::default().typing_timeout(Duration::from_millis(200));
    let bot = start_bot_with(
        &dir.path().join("t.db"),
        &url,
        AccountId::new(),
        true,
        options,
    )
    .await;
    for (n, text) in ["one", "two", "three"].iter().enumerate() {
        api.say(ADA, "Ada", text);
        let sent = api.wait_for(ADA, n + 1).await;
        assert_eq!(sent[n], format!("echo: {text}"));
    }
    // The failure is logged once it is known (a refusal at once, silence
    // after the typing timeout)...
    let said = || {
        String::from_utf8(logs.lock().unwrap().clone())
            .unwrap()
            .matches("typing indicators fail")
            .count()
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        while said() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a failing typing indicator is logged");
    // ...and not again for later messages.
    api.say(BOB, "Bob", "me too");
    assert_eq!(api.wait_for(BOB, 1).await, ["echo: me too"]);
    let (actions, polls) = {
        let s = api.state.lock().unwrap();
        (s.actions.len(), s.polls.len())
    };
    let elapsed = started.elapsed();
    bot.tasks.shutdown_background();
    assert!(actions >= 2, "typing was tried ({actions} times)");
    // Polls that return at once are spaced; a tight loop would make
    // thousands in this time.
    let spaced = elapsed.as_secs_f64() / MIN_POLL_INTERVAL.as_secs_f64();
    assert!(
        (polls as f64) <= spaced + 5.0,
        "{polls} getUpdates calls in {elapsed:?}"
    );
    assert_eq!(said(), 1, "said once, not per message or poll");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_chat_actions_never_hold_up_an_answer() {
    a_failing_typing_indicator_never_holds_up_an_answer(ChatActions::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_actions_that_never_answer_never_hold_up_an_answer() {
    a_failing_typing_indicator_never_holds_up_an_answer(ChatActions::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_telegram_refuses_blocks_no_other_chat() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = FakeBotApi::start().await;
    api.state.lock().unwrap().blocked.insert(ADA);
    let bot = start_bot(&dir.path().join("b.db"), &url, AccountId::new(), true).await;
    // Ada blocked the bot: neither a command's answer nor a reply can reach her.
    api.say(ADA, "Ada", "/start");
    api.say(ADA, "Ada", "hello?");
    api.say(BOB, "Bob", "/start");
    api.say(BOB, "Bob", "hi");
    let bob = api.wait_for(BOB, 2).await;
    assert!(bob[0].starts_with("Hello!"), "{bob:?}");
    assert_eq!(bob[1], "echo: hi");
    api.wait_confirmed().await;
    // Ada's reply is given up once Telegram says it never takes it, rather
    // than tried for ever. (Redelivery at once: no other delivery runs.)
    let _redelivery = bot.telegram.spawn_redelivery(
        TelegramChannel::new(client(TOKEN, Some(&url)).unwrap()),
        Duration::ZERO,
        Duration::from_millis(50),
    );
    let mut events = bot.runtime.subscribe();
    while !bot.runtime.undelivered_replies().await.unwrap().is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("a reply Telegram refuses stays in the outbox");
    }
    assert!(api.sent_to(ADA).is_empty());
    bot.tasks.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_messages_and_strangers_are_answered_and_chats_end_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = FakeBotApi::start().await;
    let account = AccountId::new();
    let options = BotOptions::default()
        .allow_only([ADA.to_string()])
        .chat_idle(Duration::from_millis(50));
    let bot = start_bot_with(&dir.path().join("u.db"), &url, account, true, options).await;
    api.sticker(ADA, "Ada");
    let sent = api.wait_for(ADA, 1).await;
    assert!(
        sent[0].contains("cannot read this kind of message"),
        "{sent:?}"
    );
    api.say(BOB, "Bob", "let me in");
    let refused = api.wait_for(BOB, 1).await;
    assert!(refused[0].starts_with("This bot is private"), "{refused:?}");
    let bob = AccountMembers::new(account).user_id("telegram", &BOB.to_string());
    assert!(
        bot.runtime
            .store()
            .sessions_of_user(bob)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(bot.runtime.store().role(account, bob).await.unwrap(), None);
    // Many messages in one chat: one worker, one pending wake-up, all
    // answered in order.
    for n in 0..30 {
        api.say(ADA, "Ada", &format!("m{n}"));
    }
    let sent = api.wait_for(ADA, 31).await;
    let expected: Vec<String> = (0..30).map(|n| format!("echo: m{n}")).collect();
    assert_eq!(sent[1..], expected[..]);
    // Idle, the chat's worker ends.
    tokio::time::timeout(Duration::from_secs(30), async {
        while bot.telegram.active_chats() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("an idle chat's worker ends");
    api.say(ADA, "Ada", "still here");
    assert_eq!(api.wait_for(ADA, 32).await[31], "echo: still here");
    bot.tasks.shutdown_background();
}

#[test]
fn any_update_a_bot_api_server_sends_is_handled_without_panic() {
    use proptest::prelude::*;
    use thinklio_core::fuzz;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (api, telegram) = rt.block_on(async {
        let (api, url) = FakeBotApi::start().await;
        let store = SqliteStore::open(dir.path().join("fuzz.db")).await.unwrap();
        let account = AccountId::new();
        store
            .put_account(account, "telegram", AccountPolicy::default())
            .await
            .unwrap();
        let (_gate, rx) = watch::channel(true);
        let runtime = Runtime::builder()
            .store(store)
            .model(bot_model(rx))
            .agent(AgentDefinition::new("assistant", "bot-model"))
            .build()
            .unwrap();
        let bot = client(TOKEN, Some(&url)).unwrap();
        (api, TelegramBot::new(runtime, bot, "assistant", account))
    });
    let mut photo = api.update(ADA, "Ada", "caption");
    photo["message"]["photo"] = json!([{ "file_id": "AgAC", "file_unique_id": "AQAD", "width": 90, "height": 51, "file_size": 1234 }]);
    let mut document = api.update(BOB, "Bob", "");
    document["message"]["document"] = json!({ "file_id": "BQAC", "file_unique_id": "AgAD", "file_name": "a.pdf", "mime_type": "application/pdf", "file_size": 5 });
    let real = vec![
        api.update(ADA, "Ada", "hello"),
        api.update(ADA, "Ada", "/usage"),
        api.update(BOB, "Bob", "/new@thinklio_bot"),
        photo,
        document,
    ];
    let updates = prop_oneof![
        prop::sample::select(real).prop_flat_map(fuzz::mutated),
        fuzz::json(),
    ];
    proptest!(fuzz::config(), |(update in updates)| {
        // What fails to read as an update is refused before the bot sees
        // it (`422` on the webhook, an error of `getUpdates`); what reads
        // is handled: an answer or an error, never a panic.
        if let Ok(update) = serde_json::from_value::<teloxide_core::types::Update>(update) {
            let _ = rt.block_on(telegram.handle(update));
        }
    });
}
