//! Thinklio as a Telegram bot, on `teloxide-core` (the Bot API client of
//! teloxide).
//!
//! Each Telegram user is a user of one account (created on first contact,
//! [`AccountMembers`]); each chat has one session at a time (`/new` starts
//! the next). A message is recorded durably (`ChannelHost::submit`) before
//! Telegram is told it was received (the next `getUpdates` offset, or the
//! webhook's `200`), so a bot that stops at any moment loses no message; a
//! message Telegram delivers again is answered once (its id is the
//! interaction's inbound id). Replies and job follow-ups leave through the
//! outbox and [`TelegramChannel`], split at Telegram's length limit.
//!
//! Commands: `/start`, `/new`, `/usage` (the user's spend this month),
//! `/forget` (deletes everything the bot holds of the user: conversations,
//! jobs, what it learned). Messages it cannot read (voice, stickers) are
//! answered with what it can read; an optional allow-list keeps a bot
//! private. The token is never logged: `teloxide-core` removes it from its
//! errors and this module never prints the `Bot`.
//!
//! Nothing Telegram answers holds the bot up: the typing indicator runs
//! beside the answer and its failures are logged once; a reply or command
//! answer that cannot be sent is logged and the next update goes on;
//! `getUpdates` calls that return at once are spaced by
//! [`MIN_POLL_INTERVAL`] and failures back off; a chat's worker ends when
//! the chat is idle, and holds at most one pending wake-up (the messages
//! themselves wait in the store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use teloxide_core::payloads::{
    AnswerCallbackQuerySetters, GetUpdatesSetters, SendMessageSetters, SetWebhookSetters,
};
use teloxide_core::requests::Requester;
use teloxide_core::types::{
    CallbackQuery, ChatAction, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update,
    UpdateKind,
};
use teloxide_core::{Bot, RequestError};
use thinklio_core::approval::{ApprovalMode, Decision};
use thinklio_core::channel::{
    AccountMembers, Attachment, Channel, ChannelHost, ChannelMessage, ChatKey,
};
use thinklio_core::{
    AccountId, AgentState, Clock, DeliveryError, OutboxMessage, Runtime, SessionId, SystemClock,
};
use tokio::sync::mpsc;

/// The channel name of Telegram sessions.
pub const CHANNEL: &str = "telegram";

/// Telegram's longest message, in UTF-16 code units.
pub const MESSAGE_LIMIT: usize = 4096;

/// Why the bot could not do something.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// The Bot API refused or could not be reached (the token is not in the text).
    #[error("Telegram: {0}")]
    Telegram(#[from] RequestError),
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] thinklio_core::RuntimeError),
    /// The configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
}

/// A Bot API client for `token`, at `api_url` (a self-hosted Bot API server)
/// or Telegram's.
pub fn client(token: &str, api_url: Option<&str>) -> Result<Bot, BotError> {
    // Long polls last up to `POLL_TIMEOUT`; teloxide's settings allow 17 s.
    let http = teloxide_core::net::default_reqwest_settings()
        .build()
        .map_err(|e| BotError::Config(format!("HTTP client: {e}")))?;
    let bot = Bot::with_client(token, http);
    Ok(match api_url {
        Some(url) => bot.set_api_url(
            reqwest::Url::parse(url)
                .map_err(|e| BotError::Config(format!("TELEGRAM_API_URL `{url}`: {e}")))?,
        ),
        None => bot,
    })
}

/// How long one `getUpdates` waits for news.
const POLL_TIMEOUT: u32 = 10;

/// Splits a reply into parts Telegram accepts, at a line break or a space
/// when one is in the second half of a part.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // The byte where `limit` UTF-16 units end.
        let mut units = 0;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            if units + c.len_utf16() > limit {
                end = i;
                break;
            }
            units += c.len_utf16();
        }
        if end < rest.len() {
            let half = end / 2;
            if let Some(cut) = rest[..end]
                .rfind('\n')
                .or_else(|| rest[..end].rfind(' '))
                .filter(|&c| c > half)
            {
                end = cut + 1;
            }
        }
        parts.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    parts
}

/// Delivers replies of `telegram` sessions to their chats.
#[derive(Clone)]
pub struct TelegramChannel {
    bot: Bot,
}

impl std::fmt::Debug for TelegramChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TelegramChannel")
    }
}

impl TelegramChannel {
    /// Replies through `bot`.
    pub fn new(bot: Bot) -> Self {
        Self { bot }
    }
}

fn delivery_error(e: RequestError) -> DeliveryError {
    let retryable = matches!(
        e,
        RequestError::RetryAfter(_) | RequestError::Network(_) | RequestError::Io(_)
    );
    DeliveryError {
        message: e.to_string(),
        retryable,
    }
}

#[async_trait]
impl Channel for TelegramChannel {
    fn name(&self) -> &str {
        CHANNEL
    }

    /// Sends the reply in parts of at most [`MESSAGE_LIMIT`]. Telegram takes
    /// no client id, so a reply interrupted between its parts is sent again
    /// from its first part.
    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        let chat = ChatKey::of(message)
            .and_then(|k| k.chat.parse::<i64>().ok())
            .ok_or_else(|| DeliveryError {
                message: format!("reply {} has no Telegram chat", message.id),
                retryable: false,
            })?;
        for part in split_message(&message.text, MESSAGE_LIMIT) {
            self.bot
                .send_message(ChatId(chat), part)
                .await
                .map_err(delivery_error)?;
        }
        Ok(())
    }
}

/// Settings of the bot.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BotOptions {
    /// When set, only these Telegram user ids are served; others are told
    /// the bot is private and nothing of theirs is recorded.
    pub allowed_users: Option<std::collections::BTreeSet<String>>,
    /// How long a chat's worker waits for more before it ends (60 s).
    pub chat_idle: Duration,
    /// How long one typing indicator may take before it is given up (5 s).
    pub typing_timeout: Duration,
    /// The largest photo downloaded and shown to the model, in bytes (the
    /// runtime's default image limit, 5 MiB): of a photo's sizes, the
    /// largest within it is taken.
    pub max_image_bytes: usize,
}

impl Default for BotOptions {
    fn default() -> Self {
        Self {
            allowed_users: None,
            chat_idle: Duration::from_secs(60),
            typing_timeout: Duration::from_secs(5),
            max_image_bytes: thinklio_core::image::DEFAULT_MAX_IMAGE_BYTES,
        }
    }
}

impl BotOptions {
    /// Gives a typing indicator up after `timeout`.
    pub fn typing_timeout(mut self, timeout: Duration) -> Self {
        self.typing_timeout = timeout;
        self
    }

    /// Downloads photos of at most `bytes`.
    pub fn max_image_bytes(mut self, bytes: usize) -> Self {
        self.max_image_bytes = bytes;
        self
    }

    /// Ends a chat's worker after `idle` without messages.
    pub fn chat_idle(mut self, idle: Duration) -> Self {
        self.chat_idle = idle;
        self
    }

    /// Serves only these Telegram user ids.
    pub fn allow_only(mut self, users: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.allowed_users = Some(users.into_iter().map(Into::into).collect());
        self
    }
}

/// The shortest time between two `getUpdates` calls when the first came
/// back at once with nothing (a server that does not long-poll).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The bot: turns updates into runtime calls.
pub struct TelegramBot {
    bot: Bot,
    host: ChannelHost,
    account: AccountId,
    options: BotOptions,
    /// The worker of each chat session with work, and its wake-up: the
    /// messages wait in the store, so one pending wake-up is enough.
    chats: Mutex<HashMap<SessionId, (u64, mpsc::Sender<()>)>>,
    workers: std::sync::atomic::AtomicU64,
    /// Whether a failed typing indicator was logged already.
    typing_failed: std::sync::atomic::AtomicBool,
    /// Calls waiting for a decision that the chat was shown (with their
    /// buttons); each leaves when it is decided, so it holds at most the
    /// calls that wait.
    shown: Mutex<std::collections::HashSet<thinklio_core::StepId>>,
}

impl std::fmt::Debug for TelegramBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramBot")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// The text of a message and what is attached to it (a photo is fetched
/// apart, by [`TelegramBot::photo`]).
fn read_message(message: &Message) -> Option<(String, Vec<Attachment>)> {
    let mut attachments = Vec::new();
    if let Some(doc) = message.document() {
        let mut a =
            Attachment::new("document", doc.file.id.to_string()).size(u64::from(doc.file.size));
        if let Some(name) = &doc.file_name {
            a = a.name(name.clone());
        }
        if let Some(mime) = &doc.mime_type {
            a = a.mime_type(mime.to_string());
        }
        attachments.push(a);
    }
    let text = message
        .text()
        .or_else(|| message.caption())
        .unwrap_or_default()
        .to_owned();
    (!text.is_empty() || !attachments.is_empty() || message.photo().is_some())
        .then_some((text, attachments))
}

/// A message's photo, as [`TelegramBot::photo`] read it.
enum Photo {
    /// The message has none.
    None,
    /// Downloaded: shown to the model.
    Image(thinklio_core::ImageInput),
    /// Not readable: described to the model.
    Unread(Attachment),
}

/// Whether the runtime refused a message for what it is (too long, not
/// allowed, for an agent that is unknown, paused or archived), so that
/// taking the update again cannot help: it is answered, not retried.
fn refused(e: &thinklio_core::RuntimeError) -> bool {
    use thinklio_core::RuntimeError as E;
    matches!(
        e,
        E::EmptyMessage
            | E::MessageTooLarge { .. }
            | E::Image(_)
            | E::Forbidden(_)
            | E::UnknownAgent(_)
            | E::AgentPaused(_)
            | E::AgentArchived(_)
    )
}

impl TelegramBot {
    /// A bot serving `agent` to the users of `account`, replying through `bot`.
    pub fn new(runtime: Runtime, bot: Bot, agent: &str, account: AccountId) -> Arc<Self> {
        Self::with_options(runtime, bot, agent, account, BotOptions::default())
    }

    /// The same, with `options`.
    pub fn with_options(
        runtime: Runtime,
        bot: Bot,
        agent: &str,
        account: AccountId,
        options: BotOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            host: ChannelHost::new(runtime, agent, AccountMembers::new(account)),
            bot,
            account,
            options,
            chats: Mutex::new(HashMap::new()),
            workers: std::sync::atomic::AtomicU64::new(0),
            typing_failed: std::sync::atomic::AtomicBool::new(false),
            shown: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// How many chats have a worker now.
    pub fn active_chats(&self) -> usize {
        self.chats.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        self.host.runtime()
    }

    /// Handles one update. When it returns `Ok`, the update's message is
    /// durable (or answered, for a command): Telegram may be told it arrived.
    /// An `Err` means it was not recorded and should come again.
    pub async fn handle(self: &Arc<Self>, update: Update) -> Result<(), BotError> {
        let message = match update.kind {
            UpdateKind::Message(message) => message,
            UpdateKind::CallbackQuery(query) => return self.decide(query).await,
            _ => return Ok(()),
        };
        let Some(user) = message.from.as_ref().map(|u| u.id.0.to_string()) else {
            return Ok(());
        };
        let chat = message.chat.id;
        if let Some(allowed) = &self.options.allowed_users
            && !allowed.contains(&user)
        {
            self.say(
                chat,
                "This bot is private: it answers only the users it was set up for.",
            )
            .await;
            return Ok(());
        }
        let Some((text, attachments)) = read_message(&message) else {
            self.say(
                chat,
                "I can read text, photos and documents; I cannot read this kind of message yet.",
            )
            .await;
            return Ok(());
        };
        let command = text
            .split_whitespace()
            .next()
            .map(|c| c.split('@').next().unwrap_or(c));
        match command {
            Some("/start") => {
                self.say(chat, "Hello! I am a Thinklio agent. Ask me anything.\n/new starts a new conversation, /agent NAME talks to another agent of this bot's account, /mode observe|draft|autopilot sets how much I may do without asking in this one, /usage shows what you spent this month, /forget deletes everything I hold about you.")
                    .await;
                return Ok(());
            }
            Some("/new") => {
                self.host
                    .new_session(CHANNEL, &user, &chat.0.to_string())
                    .await?;
                self.say(chat, "Started a new conversation.").await;
                return Ok(());
            }
            Some("/agent") => {
                let text = self
                    .choose_agent(&user, chat, text.split_whitespace().nth(1))
                    .await?;
                self.say(chat, &text).await;
                return Ok(());
            }
            Some("/mode") => {
                let text = self
                    .set_mode(&user, chat, text.split_whitespace().nth(1))
                    .await?;
                self.say(chat, &text).await;
                return Ok(());
            }
            Some("/usage") => {
                let principal = self.host.principal(CHANNEL, &user).await?;
                let (_, totals) =
                    crate::usage_this_month(self.runtime(), self.account, Some(principal.user))
                        .await?;
                let text = format!(
                    "This month: {} calls, {} tokens ({} in, {} out), {}.",
                    totals.calls,
                    totals.tokens.total(),
                    totals.tokens.input_tokens,
                    totals.tokens.output_tokens,
                    totals.cost
                );
                self.say(chat, &text).await;
                return Ok(());
            }
            Some("/forget") => {
                let report = self.host.forget(CHANNEL, &user).await?;
                self.say(
                    chat,
                    &format!(
                        "Done: I deleted everything I held about you: {} conversation(s), {} message(s), \
                         {} job(s) and the {} fact(s) I had learned.",
                        report.sessions, report.interactions, report.jobs, report.facts
                    ),
                )
                .await;
                return Ok(());
            }
            _ => {}
        }
        let mut inbound = ChannelMessage::new(CHANNEL, user, chat.0.to_string(), text)
            .id(message.id.0.to_string());
        for a in attachments {
            inbound = inbound.attachment(a);
        }
        inbound = match self.photo(&message).await {
            Photo::None => inbound,
            Photo::Image(image) => inbound.image(image),
            // Told to the model, so it can say it did not see it.
            Photo::Unread(attachment) => inbound.attachment(attachment),
        };
        match self.host.submit(&inbound).await {
            Ok((session, _)) => {
                self.answer(session.id, chat);
                Ok(())
            }
            // A message that can never be taken is answered, not retried:
            // retrying would stop every update behind it.
            Err(e) if refused(&e) => {
                self.say(chat, &format!("I cannot take this message: {e}"))
                    .await;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The photo of a message, downloaded: of its sizes, the largest
    /// within [`BotOptions::max_image_bytes`]. A photo that cannot be
    /// downloaded (or has no size small enough) is described instead, so
    /// one bad file never holds up the updates behind it.
    async fn photo(&self, message: &Message) -> Photo {
        use futures::StreamExt as _;
        use teloxide_core::net::Download as _;
        let Some(sizes) = message.photo() else {
            return Photo::None;
        };
        let limit = self.options.max_image_bytes;
        let Some(largest) = sizes.iter().max_by_key(|p| p.width * p.height) else {
            return Photo::None;
        };
        let unread = |why: &str| {
            tracing::warn!(
                reason = why,
                "a photo could not be read; it is described instead"
            );
            Photo::Unread(
                Attachment::new(
                    "photo (not shown: it could not be read)",
                    largest.file.id.to_string(),
                )
                .size(u64::from(largest.file.size))
                .mime_type("image/jpeg"),
            )
        };
        let Some(best) = sizes
            .iter()
            .filter(|p| usize::try_from(p.file.size).is_ok_and(|s| s <= limit))
            .max_by_key(|p| p.width * p.height)
        else {
            return unread("every size is over the image limit");
        };
        let file = match self.bot.get_file(best.file.id.clone()).await {
            Ok(file) => file,
            Err(_) => return unread("getFile failed"),
        };
        // Read in chunks up to the limit: a file larger than it said it
        // was is not read to its end.
        let mut stream = self.bot.download_file_stream(&file.path);
        let mut data = Vec::with_capacity(usize::try_from(best.file.size).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return unread("the download failed");
            };
            if data.len() + chunk.len() > limit {
                return unread("the file is over the image limit");
            }
            data.extend_from_slice(&chunk);
        }
        Photo::Image(thinklio_core::ImageInput::bytes(data))
    }

    /// `/agent [NAME]`: starts a conversation with agent NAME in this chat
    /// (kept until the chat chooses again, restarts included), or says which
    /// agent the chat talks to and which it may choose. An agent the user
    /// may not use is refused and the chat stays as it was.
    async fn choose_agent(
        &self,
        user: &str,
        chat: ChatId,
        name: Option<&str>,
    ) -> Result<String, BotError> {
        let key = chat.0.to_string();
        let Some(name) = name else {
            let session = self.host.session(CHANNEL, user, &key).await?;
            let principal = self.host.principal(CHANNEL, user).await?;
            let mut names = vec![self.host.agent().to_string()];
            // Listing needs a member's read; a user who may not list still
            // learns the agent they talk to.
            if let Ok(agents) = self.runtime().directory().agents(principal).await {
                names.extend(
                    agents
                        .iter()
                        .filter(|a| a.state == AgentState::Active)
                        .map(|a| a.id().to_string()),
                );
            }
            names.dedup();
            return Ok(format!(
                "This chat talks to {}. Say /agent NAME to choose another: {}.",
                session.agent_id,
                names.join(", ")
            ));
        };
        match self.host.use_agent(CHANNEL, user, &key, name).await {
            Ok(session) => Ok(format!(
                "Now talking to {} in a new conversation.",
                session.agent_id
            )),
            Err(e) if refused(&e) => Ok(format!("I cannot switch to {name}: {e}")),
            Err(e) => Err(e.into()),
        }
    }

    /// `/mode [observe|draft|autopilot|agent]`: chooses the approval mode of
    /// the chat's conversation (it can only be more careful than the
    /// agent's; `agent` goes back to the agent's), or says the current one.
    async fn set_mode(
        &self,
        user: &str,
        chat: ChatId,
        asked: Option<&str>,
    ) -> Result<String, BotError> {
        let session = self
            .host
            .session(CHANNEL, user, &chat.0.to_string())
            .await?;
        let principal = self.host.principal(CHANNEL, user).await?;
        let mode = match asked {
            None => {
                // The session as stored (the chat's slot keeps only its id).
                let session = self.runtime().sessions().get(principal, session.id).await?;
                return Ok(match session.approval_mode {
                    Some(mode) => format!("This conversation runs in {mode} mode."),
                    None => "This conversation runs in the agent's own mode.".to_owned(),
                });
            }
            Some("agent") => None,
            Some(word) => match word.parse::<ApprovalMode>() {
                Ok(mode) => Some(mode),
                Err(_) => {
                    return Ok(
                        "Say /mode observe, /mode draft, /mode autopilot or /mode agent."
                            .to_owned(),
                    );
                }
            },
        };
        self.runtime()
            .approvals()
            .set_session_mode(principal, session.id, mode)
            .await?;
        Ok(match mode {
            Some(mode) => format!(
                "This conversation now runs in {mode} mode (never less careful than the agent's own)."
            ),
            None => "This conversation now runs in the agent's own mode.".to_owned(),
        })
    }

    /// Sends a short answer of the bot's own (a command's, a refusal). One
    /// that cannot be sent is logged and given up: it must not hold up the
    /// updates behind it (what the runtime answers leaves through the
    /// outbox, which keeps trying).
    async fn say(&self, chat: ChatId, text: &str) {
        if let Err(e) = self.bot.send_message(chat, text).await {
            tracing::warn!(chat = chat.0, error = %e, "a message of the bot could not be sent");
        }
    }

    /// Wakes the worker of a session with a recorded message, starting one
    /// if the chat has none.
    fn answer(self: &Arc<Self>, session: SessionId, chat: ChatId) {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, wake)) = chats.get(&session) {
            match wake.try_send(()) {
                // Awake, or about to look at the store again: either way
                // it finds this message.
                Ok(()) | Err(mpsc::error::TrySendError::Full(())) => return,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    chats.remove(&session);
                }
            }
        }
        let (wake, woken) = mpsc::channel(1);
        let _ = wake.try_send(());
        let id = self
            .workers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        chats.insert(session, (id, wake));
        tokio::spawn(Arc::clone(self).chat_worker(session, chat, id, woken));
    }

    /// Answers a session's waiting messages each time it is woken; ends
    /// when the chat has been idle for a while.
    async fn chat_worker(
        self: Arc<Self>,
        session: SessionId,
        chat: ChatId,
        id: u64,
        mut woken: mpsc::Receiver<()>,
    ) {
        loop {
            match tokio::time::timeout(self.options.chat_idle, woken.recv()).await {
                Ok(Some(())) => self.answer_waiting(session, chat).await,
                Ok(None) => return,
                Err(_) => {
                    let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
                    // Woken while the lock was being taken: go on.
                    if woken.try_recv().is_ok() {
                        drop(chats);
                        self.answer_waiting(session, chat).await;
                        continue;
                    }
                    if chats.get(&session).is_some_and(|(i, _)| *i == id) {
                        chats.remove(&session);
                    }
                    return;
                }
            }
        }
    }

    /// A press of Approve or Reject under a proposed call: the decision is
    /// recorded (as the user who pressed, through `telegram`) before
    /// Telegram is told the update arrived, and the chat's worker runs the
    /// conversation on. A press that cannot count (another user's, a call
    /// decided otherwise) is answered with why.
    async fn decide(self: &Arc<Self>, query: CallbackQuery) -> Result<(), BotError> {
        let data = query.data.as_deref().unwrap_or_default();
        let parsed = data
            .split_once(':')
            .and_then(|(what, id)| Some((what, id.parse::<thinklio_core::StepId>().ok()?)));
        let Some((what, step)) = parsed else {
            self.acknowledge(&query, "This button is not one of mine.")
                .await;
            return Ok(());
        };
        let decision = match what {
            "approve" => Decision::Approve,
            _ => Decision::Reject {
                reason: Some("rejected in Telegram".into()),
            },
        };
        let principal = self
            .host
            .principal(CHANNEL, &query.from.id.0.to_string())
            .await?;
        let chat = query
            .message
            .as_ref()
            .map_or(ChatId(query.from.id.0 as i64), |m| m.chat().id);
        match self
            .runtime()
            .approvals()
            .record(principal, step, decision, CHANNEL)
            .await
        {
            Ok((stored, session)) => {
                self.shown
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&step);
                let said = if stored.decision.runs() {
                    "Approved."
                } else {
                    "Rejected."
                };
                self.acknowledge(&query, said).await;
                if let Some(session) = session {
                    self.answer(session, chat);
                }
                Ok(())
            }
            Err(e)
                if !matches!(
                    e,
                    thinklio_core::RuntimeError::Store(thinklio_core::StoreError::Backend(_))
                ) =>
            {
                self.acknowledge(&query, &format!("That did not count: {e}"))
                    .await;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Answers a button press (Telegram shows the text briefly).
    async fn acknowledge(&self, query: &CallbackQuery, text: &str) {
        if let Err(e) = self
            .bot
            .answer_callback_query(query.id.clone())
            .text(text)
            .await
        {
            tracing::warn!(error = %e, "a button press could not be answered");
        }
    }

    /// Shows each call of the session that waits for a decision and was not
    /// shown yet, with Approve and Reject buttons.
    async fn show_proposals(&self, session: SessionId, chat: ChatId) {
        let host = thinklio_core::Actor::Account(self.account);
        let pending = match self.runtime().approvals().of_session(host, session).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "the calls waiting for a decision could not be read");
                return;
            }
        };
        for p in pending {
            if !self
                .shown
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.step_id)
            {
                continue;
            }
            let text = format!("Run {} with {}?", p.capability, p.arguments);
            let buttons = InlineKeyboardMarkup::new([[
                InlineKeyboardButton::callback("Approve", format!("approve:{}", p.step_id)),
                InlineKeyboardButton::callback("Reject", format!("reject:{}", p.step_id)),
            ]]);
            if let Err(e) = self
                .bot
                .send_message(chat, text)
                .reply_markup(buttons)
                .await
            {
                tracing::warn!(chat = chat.0, error = %e, "a proposed call could not be shown");
                self.shown
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&p.step_id);
            }
        }
    }

    /// Runs what waits in the session, with "typing…" beside it, then shows
    /// the calls that wait for a decision.
    async fn answer_waiting(self: &Arc<Self>, session: SessionId, chat: ChatId) {
        let (done, answered) = tokio::sync::watch::channel(false);
        tokio::spawn(Arc::clone(self).show_typing(chat, answered));
        let result = self.runtime().answer_waiting(session).await;
        let _ = done.send(true);
        self.show_proposals(session, chat).await;
        // The replies went out through the outbox; a failed interaction was
        // answered with its reason.
        if let Err(e) = result {
            tracing::warn!(session = %session, code = e.code().as_str(), error = %e, "a Telegram chat could not be answered");
        }
    }

    /// Shows "typing…" now and every few seconds until `answered`.
    /// Decoration: it runs beside the answer, never in its way; a call that
    /// fails or does not answer is given up, and logged once per bot.
    async fn show_typing(
        self: Arc<Self>,
        chat: ChatId,
        mut answered: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let limit = self.options.typing_timeout;
            let sent =
                tokio::time::timeout(limit, self.bot.send_chat_action(chat, ChatAction::Typing))
                    .await;
            let failure = match sent {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {limit:?}")),
            };
            if let Some(failure) = failure
                && !self
                    .typing_failed
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(error = %failure, "typing indicators fail; messages are answered without them");
            }
            tokio::select! {
                _ = answered.wait_for(|done| *done) => return,
                () = tokio::time::sleep(Duration::from_secs(4)) => {}
            }
        }
    }

    /// Long polling: asks for updates, records each, then confirms them with
    /// the next request's offset. Runs until the task is stopped. Calls that
    /// come back at once with nothing are spaced by [`MIN_POLL_INTERVAL`];
    /// failures (of `getUpdates`, or to record an update) back off up to
    /// 30 s (or as long as Telegram's flood control asks), logged once per
    /// streak.
    pub fn spawn_polling(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let bot = Arc::clone(self);
        tokio::spawn(async move {
            let mut offset: i32 = 0;
            let first_backoff = Duration::from_millis(500);
            let mut backoff = first_backoff;
            loop {
                let asked = tokio::time::Instant::now();
                let updates = bot
                    .bot
                    .get_updates()
                    .offset(offset)
                    .timeout(POLL_TIMEOUT)
                    .await;
                let updates = match updates {
                    Ok(u) => u,
                    Err(e) => {
                        if backoff == first_backoff {
                            tracing::warn!(error = %e, "getUpdates failed; trying again with backoff");
                        }
                        // Flood control names its own wait; never ask sooner.
                        let wait = match &e {
                            RequestError::RetryAfter(after) => backoff.max(after.duration()),
                            _ => backoff,
                        };
                        tokio::time::sleep(wait).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                };
                if updates.is_empty() {
                    tokio::time::sleep_until(asked + MIN_POLL_INTERVAL).await;
                }
                let mut failed = false;
                for update in updates {
                    let id = update.id.0;
                    // Not confirmed until recorded: on failure the same
                    // update comes again with the next request.
                    match bot.handle(update).await {
                        Ok(()) => offset = i32::try_from(id).unwrap_or(i32::MAX).saturating_add(1),
                        Err(e) => {
                            if backoff == first_backoff {
                                tracing::warn!(update = id, error = %e, "update not recorded; it will come again");
                            }
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                } else {
                    backoff = first_backoff;
                }
            }
        })
    }

    /// Webhook mode: registers `url` with Telegram (with `secret` as its
    /// secret token) and returns the route that takes its updates: each is
    /// recorded before the `200` that tells Telegram it arrived.
    pub async fn webhook(
        self: &Arc<Self>,
        url: &str,
        secret: &str,
    ) -> Result<axum::Router, BotError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| BotError::Config(format!("webhook URL `{url}`: {e}")))?;
        let path = parsed.path().to_owned();
        self.bot
            .set_webhook(parsed)
            .secret_token(secret.to_owned())
            .await?;
        let bot = Arc::clone(self);
        let secret = secret.to_owned();
        Ok(axum::Router::new().route(
            &path,
            axum::routing::post(
                move |headers: axum::http::HeaderMap, axum::Json(update): axum::Json<Update>| {
                    let bot = Arc::clone(&bot);
                    let secret = secret.clone();
                    async move {
                        let given = headers
                            .get("x-telegram-bot-api-secret-token")
                            .map(|v| v.as_bytes())
                            .unwrap_or_default();
                        // Compared in constant time: the time taken says
                        // nothing of how much of a guess was right.
                        if !bool::from(subtle::ConstantTimeEq::ct_eq(given, secret.as_bytes())) {
                            return axum::http::StatusCode::UNAUTHORIZED;
                        }
                        match bot.handle(update).await {
                            Ok(()) => axum::http::StatusCode::OK,
                            // Telegram sends it again later.
                            Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        }
                    }
                },
            ),
        ))
    }

    /// Delivers replies that stayed in the outbox (Telegram was unreachable
    /// when they were written) once they are `after` old, every `every`.
    pub fn spawn_redelivery(
        self: &Arc<Self>,
        channel: TelegramChannel,
        after: Duration,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let bot = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Ok(waiting) = bot.runtime().undelivered_replies().await else {
                    continue;
                };
                let now = SystemClock.now();
                for reply in waiting {
                    // A young reply may be being delivered right now.
                    if reply.channel != CHANNEL || now.since(reply.created_at) < after {
                        continue;
                    }
                    match channel.deliver(&reply).await {
                        Ok(()) => {
                            let _ = bot.runtime().acknowledge_reply(&reply).await;
                        }
                        // Telegram will never take it (the chat is gone, the
                        // bot was blocked): given up, not tried forever. The
                        // reply stays in the interaction's record.
                        Err(e) if !e.retryable => {
                            tracing::warn!(reply = %reply.id, error = %e.message, "Telegram refuses a reply for good; it is given up");
                            let _ = bot.runtime().acknowledge_reply(&reply).await;
                        }
                        Err(_) => {}
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split_message;

    #[test]
    fn long_replies_split_at_the_limit_and_at_spaces() {
        let text = "word ".repeat(1000);
        let parts = split_message(&text, 4096);
        assert_eq!(parts.concat(), text);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].ends_with(' ') && parts[0].encode_utf16().count() <= 4096);
        let emoji = "😀".repeat(3000); // two UTF-16 units each
        let parts = split_message(&emoji, 4096);
        assert_eq!(parts.concat(), emoji);
        assert!(parts.iter().all(|p| p.encode_utf16().count() <= 4096));
        assert_eq!(parts.len(), 2);
        assert!(split_message("", 10).is_empty());
    }
}
