//! A local Bot API server for the Telegram bot's tests. It speaks the Bot
//! API's wire format (`POST /bot<token>/<method>` with JSON or multipart,
//! answers `{"ok": true, "result": …}`; `getUpdates` long-polls with
//! `offset` and `timeout`; updates, messages, chats and users as the Bot API
//! documents them), and has switches for what real servers do: chat actions
//! refused or never answered, `getUpdates` that returns at once, chats that
//! blocked the bot. Also the bot's model and a bot in its own runtime.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use serde_json::{Value, json};
use thinklio_core::channel::ChannelRouter;
use thinklio_core::{
    AccountId, AccountPolicy, AgentDefinition, ChatModel, ChatRequest, ChatResponse, ChatStream,
    DirectoryStore, ModelError, Role, Runtime,
};
use thinklio_examples::http::server::word_count;
use thinklio_examples::telegram::{BotOptions, TelegramBot, TelegramChannel, client};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use tokio::sync::{Notify, watch};

pub const TOKEN: &str = "4839574812:AAFD39kkdpWt3ywyRZergyOLMaJhac60qc";

/// How the fake server answers `sendChatAction`.
#[derive(Default, Clone, Copy, PartialEq)]
pub enum ChatActions {
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
pub struct Telegram {
    /// How chat actions are answered.
    pub chat_actions: ChatActions,
    /// `getUpdates` answers at once, without long polling.
    pub instant_polls: bool,
    /// When each `getUpdates` came.
    pub polls: Vec<std::time::Instant>,
    /// Errors the next `getUpdates` calls answer with, one each, as
    /// Telegram sends them (`{"ok": false, "error_code": 409, ...}`, or a
    /// 429 whose `parameters.retry_after` names the wait).
    pub poll_errors: VecDeque<Value>,
    /// Chats whose `sendMessage` is refused: the user blocked the bot.
    pub blocked: std::collections::HashSet<i64>,
    /// Updates not yet confirmed by an offset.
    pub pending: VecDeque<Value>,
    pub next_update: i64,
    pub next_message: i64,
    /// (chat, text) of every `sendMessage`, in order.
    pub sent: Vec<(i64, String)>,
    /// (chat, action) of every `sendChatAction`.
    pub actions: Vec<(i64, String)>,
    pub webhook: Option<(String, String)>,
    /// The inline keyboard of each sent message that had one, by message id.
    pub keyboards: Vec<(i64, Value)>,
    /// (callback query id, text) of every `answerCallbackQuery`.
    pub answered: Vec<(String, String)>,
    /// Files the bot may fetch: file id → (file path, bytes).
    pub files: std::collections::HashMap<String, (String, Vec<u8>)>,
    /// The file paths downloaded, in order.
    pub downloads: Vec<String>,
}

#[derive(Clone, Default)]
pub struct FakeBotApi {
    pub state: Arc<Mutex<Telegram>>,
    /// Rung when an update arrives (long polls wake) or a message is sent.
    pub news: Arc<Notify>,
}

pub fn ok(result: Value) -> Json<Value> {
    Json(json!({ "ok": true, "result": result }))
}

pub fn user(id: i64, name: &str) -> Value {
    json!({ "id": id, "is_bot": false, "first_name": name, "language_code": "en" })
}

/// A request's parameters: the Bot API takes them as JSON, or as
/// `multipart/form-data` (teloxide sends `setWebhook` so, as it may carry a
/// certificate), where a field holding JSON is that JSON.
pub async fn parameters(request: axum::extract::Request) -> Value {
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

pub async fn bot_api(
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
                if let Some(error) = s.poll_errors.pop_front() {
                    let code = error["error_code"].as_u64().unwrap() as u16;
                    return (axum::http::StatusCode::from_u16(code).unwrap(), Json(error));
                }
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
            let mut message = json!({
                "message_id": s.next_message,
                "date": now,
                "chat": { "id": chat, "type": "private", "first_name": "User" },
                "from": { "id": 4839574812_i64, "is_bot": true, "first_name": "Thinklio", "username": "thinklio_bot" },
                "text": text,
            });
            if let Some(markup) = body.get("reply_markup") {
                // Sent as JSON text in a form, or as an object in a JSON body.
                let markup = match markup {
                    Value::String(text) => serde_json::from_str(text).unwrap(),
                    other => other.clone(),
                };
                let id = s.next_message;
                s.keyboards.push((id, markup.clone()));
                message["reply_markup"] = markup;
            }
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
        "answercallbackquery" => {
            let mut s = api.state.lock().unwrap();
            s.answered.push((
                body["callback_query_id"].as_str().unwrap().to_owned(),
                body["text"].as_str().unwrap_or_default().to_owned(),
            ));
            drop(s);
            api.news.notify_waiters();
            ok(json!(true))
        }
        "getfile" => {
            let id = body["file_id"].as_str().unwrap_or_default().to_owned();
            let s = api.state.lock().unwrap();
            let Some((path, bytes)) = s.files.get(&id) else {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    Json(
                        json!({ "ok": false, "error_code": 400, "description": "Bad Request: invalid file_id" }),
                    ),
                );
            };
            ok(json!({
                "file_id": id,
                "file_unique_id": format!("AQAD{}", id.len()),
                "file_size": bytes.len(),
                "file_path": path,
            }))
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

/// `GET /file/bot<token>/<file_path>`: a file's bytes, as the Bot API
/// serves what `getFile` named.
pub async fn file_download(
    State(api): State<FakeBotApi>,
    UrlPath((bot, path)): UrlPath<(String, String)>,
) -> (axum::http::StatusCode, Vec<u8>) {
    if bot != format!("bot{TOKEN}") {
        return (axum::http::StatusCode::UNAUTHORIZED, Vec::new());
    }
    let mut s = api.state.lock().unwrap();
    s.downloads.push(path.clone());
    match s.files.values().find(|(p, _)| *p == path) {
        Some((_, bytes)) => (axum::http::StatusCode::OK, bytes.clone()),
        None => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
    }
}

/// A photo as Telegram keeps it, one file per size.
pub const SMALL_PHOTO: &[u8] = include_bytes!("../fixtures/photo-90x51.jpg");
/// The same photo, larger.
pub const LARGE_PHOTO: &[u8] = include_bytes!("../fixtures/photo-320x180.jpg");

impl FakeBotApi {
    /// A user sends a photo (in two sizes, as Telegram sends them, with
    /// `caption` if any); its files become fetchable. Returns the update.
    pub fn photo(&self, from: i64, name: &str, caption: Option<&str>) -> Value {
        let mut update = self.update(from, name, "");
        let message = update["message"].as_object_mut().unwrap();
        message.remove("text");
        if let Some(caption) = caption {
            message.insert("caption".into(), json!(caption));
        }
        let n = update["update_id"].as_i64().unwrap();
        let mut sizes = Vec::new();
        let mut s = self.state.lock().unwrap();
        for (bytes, w, h) in [(SMALL_PHOTO, 90, 51), (LARGE_PHOTO, 320, 180)] {
            let id = format!("AgACAgIAAxkBAAI{n}x{w}");
            s.files.insert(
                id.clone(),
                (format!("photos/file_{n}_{w}.jpg"), bytes.to_vec()),
            );
            sizes.push(json!({
                "file_id": id, "file_unique_id": format!("AQAD{n}{w}"),
                "file_size": bytes.len(), "width": w, "height": h,
            }));
        }
        update["message"]["photo"] = Value::Array(sizes);
        update
    }

    pub async fn start() -> (FakeBotApi, String) {
        let api = FakeBotApi::default();
        let app = axum::Router::new()
            .route("/{bot}/{method}", axum::routing::post(bot_api).get(bot_api))
            .route("/file/{bot}/{*path}", axum::routing::get(file_download))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (api, format!("http://{addr}"))
    }

    /// A user writes in their private chat (chat id = user id).
    pub fn update(&self, from: i64, name: &str, text: &str) -> Value {
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

    pub fn say(&self, from: i64, name: &str, text: &str) {
        let update = self.update(from, name, text);
        self.push(update);
    }

    pub fn push(&self, update: Value) {
        self.state.lock().unwrap().pending.push_back(update);
        self.news.notify_waiters();
    }

    /// A user presses the button whose callback data starts with `prefix`
    /// under the last message with a keyboard in their chat; the callback
    /// query's id.
    pub fn press(&self, from: i64, name: &str, prefix: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let (message_id, keyboard) = s.keyboards.last().cloned().expect("a message with buttons");
        let data = keyboard["inline_keyboard"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter())
            .filter_map(|b| b["callback_data"].as_str())
            .find(|d| d.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} button in {keyboard}"))
            .to_owned();
        s.next_update += 1;
        let id = format!("cbq-{}", s.next_update);
        let update = json!({
            "update_id": 500_000 + s.next_update,
            "callback_query": {
                "id": id,
                "from": user(from, name),
                "chat_instance": "-5577006791947779410",
                "data": data,
                "message": {
                    "message_id": message_id,
                    "date": jiff::Timestamp::now().as_second(),
                    "chat": { "id": from, "type": "private", "first_name": name },
                    "from": { "id": 4839574812_i64, "is_bot": true, "first_name": "Thinklio", "username": "thinklio_bot" },
                    "text": "Run …?",
                    "reply_markup": keyboard,
                }
            }
        });
        s.pending.push_back(update);
        drop(s);
        self.news.notify_waiters();
        id
    }

    /// A user sends a sticker (no text, nothing the bot reads).
    pub fn sticker(&self, from: i64, name: &str) {
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
    pub async fn wait_confirmed(&self) {
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

    pub fn sent_to(&self, chat: i64) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.sent
            .iter()
            .filter(|(c, _)| *c == chat)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Waits until `chat` has received `n` messages; returns them all.
    pub async fn wait_for(&self, chat: i64, n: usize) -> Vec<String> {
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
pub struct BotModel {
    pub scripted: ScriptedModel,
    pub open: watch::Receiver<bool>,
}

pub fn long_text() -> String {
    (0..)
        .map(|i| format!("word{i} "))
        .take(700)
        .collect::<String>()
}

pub fn bot_model(open: watch::Receiver<bool>) -> BotModel {
    let scripted = ScriptedModel::responder(|request| {
        let last = request.messages.last().unwrap();
        if last.role == Role::Tool {
            if last.content.contains("kept") || last.content.contains("approval.") {
                return ScriptedReply::text(format!("Noted: {}", last.content));
            }
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
        // The agent a chat may choose with `/agent poet`.
        if request
            .messages
            .iter()
            .any(|m| m.role == Role::System && m.content.contains("You rhyme."))
        {
            return ScriptedReply::text(format!("in rhyme: {text}"));
        }
        if !last.images.is_empty() {
            let seen: Vec<String> = last
                .images
                .iter()
                .map(|i| match (&i.source, i.size) {
                    (thinklio_core::ImageSource::Bytes(b), Some((w, h))) => {
                        format!("{w}x{h} {} of {} bytes", i.media_type().unwrap(), b.len())
                    }
                    other => format!("{other:?}"),
                })
                .collect();
            return ScriptedReply::text(format!("I see {}; you said: {text}", seen.join(", ")));
        }
        if let Some(what) = text.strip_prefix("remember ") {
            return ScriptedReply::tool_call("r1", "remember", json!({ "text": what }).to_string());
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
    pub async fn gate(&self, request: &ChatRequest) {
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

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Note {
    /// What to keep.
    text: String,
}

/// `remember(text)`: asks before every call (its manifest says
/// `interactive`), whatever the agent's mode.
fn remember() -> thinklio_core::FunctionCapability {
    thinklio_core::FunctionCapability::builder("remember", "Keeps a note for the user.")
        .default_mode(thinklio_core::StepMode::Interactive)
        .handler(|note: Note| async move { Ok::<_, String>(json!({ "kept": note.text })) })
}

pub const ADA: i64 = 1_001;
pub const BOB: i64 = 2_002;

/// The bot in its own tokio runtime, so that stopping it drops every task
/// it has at once, as a crash would.
pub struct RunningBot {
    pub tasks: tokio::runtime::Runtime,
    pub runtime: Runtime,
    pub telegram: Arc<TelegramBot>,
}

pub async fn start_bot(db: &Path, api_url: &str, account: AccountId, open: bool) -> RunningBot {
    start_bot_with(db, api_url, account, open, BotOptions::default()).await
}

pub async fn start_bot_with(
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
                .capability(remember())
                .agent(
                    AgentDefinition::new("assistant", "bot-model")
                        .capabilities(["word_count", "remember"]),
                )
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

/// Waits until `text`'s interaction has a `think` step running.
pub async fn wait_until_thinking(runtime: &Runtime, account: AccountId, text: &str) {
    let mut events = runtime.subscribe();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let e = events.recv().await.unwrap();
            if e.kind == thinklio_core::EventKind::StepStarted && e.payload["kind"] == "think" {
                let i = runtime
                    .sessions()
                    .interaction(
                        thinklio_core::Actor::Account(account),
                        e.interaction_id.unwrap(),
                    )
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
pub struct LogWriter(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines written from the moment of [`capture_logs`] on.
///
/// A process has one subscriber, so every capture reads one buffer; each
/// reads from where the buffer stood when it began. Tests that count a line
/// no other test of their binary writes stay right under `cargo test`,
/// which runs them side by side in one process.
pub struct Logs {
    from: usize,
}

impl Logs {
    /// What was logged since the capture began.
    pub fn text(&self) -> String {
        let all = log_buffer().lock().unwrap();
        String::from_utf8_lossy(&all[self.from.min(all.len())..]).into_owned()
    }

    /// How many times `line` was logged since the capture began.
    pub fn count(&self, line: &str) -> usize {
        self.text().matches(line).count()
    }
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let logs = Arc::clone(&logs);
            move || LogWriter(Arc::clone(&logs))
        };
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(writer)
            .try_init();
        logs
    })
}

/// Captures this test process's log lines from now on.
pub fn capture_logs() -> Logs {
    Logs {
        from: log_buffer().lock().unwrap().len(),
    }
}
