//! The contract between Thinklio and the channels people reach it through
//! (a Telegram chat, an HTTP API, a web page), so that every host is thin
//! and the same governance applies to all of them.
//!
//! A host turns what its channel received into a [`ChannelMessage`] and
//! hands it to a [`ChannelHost`], which maps the channel's user to a
//! [`Principal`] (through a [`PrincipalMap`], such as [`AccountMembers`]),
//! finds the chat's current session and records or answers the message.
//! Replies — answers, and follow-ups of jobs that report back later — leave
//! through the outbox: a [`ChannelRouter`], set as the runtime's
//! [`ReplySink`], hands each to the [`Channel`] it belongs to.
//!
//! ```
//! use std::sync::Arc;
//! use thinklio_core::channel::{AccountMembers, ChannelHost, ChannelMessage, ChannelRouter};
//! use thinklio_core::{AccountId, AgentDefinition, Runtime};
//! # use thinklio_core::{ChatMessage, ChatModel, ChatRequest, ChatResponse, ChatStream};
//! # use thinklio_core::{FinishReason, ModelError, TokenUsage};
//! # struct Echo;
//! # #[async_trait::async_trait]
//! # impl ChatModel for Echo {
//! #     async fn chat(&self, r: &ChatRequest) -> Result<ChatResponse, ModelError> {
//! #         let text = r.messages.last().map(|m| m.content.clone()).unwrap_or_default();
//! #         Ok(ChatResponse { model: r.model.clone(), message: ChatMessage::assistant(text),
//! #             usage: TokenUsage::default(), finish_reason: FinishReason::Stop })
//! #     }
//! #     async fn chat_stream(&self, _: &ChatRequest) -> Result<ChatStream, ModelError> {
//! #         Err(ModelError::Config("no streaming".into()))
//! #     }
//! # }
//! # async fn demo(store: impl thinklio_core::Store) -> Result<(), thinklio_core::RuntimeError> {
//! let router = ChannelRouter::new();
//! let runtime = Runtime::builder()
//!     .store(store)
//!     .model(Echo)
//!     .agent(AgentDefinition::new("assistant", "echo"))
//!     .reply_sink(router.clone())
//!     .build()?;
//! // router.add(my_channel) for each channel the host serves.
//! let account = AccountId::new();
//! let host = ChannelHost::new(runtime, "assistant", AccountMembers::new(account));
//! let message = ChannelMessage::new("cli", "ada", "terminal-1", "hello").id("line-1");
//! let (_session, reply) = host.send(&message).await?;
//! assert_eq!(reply.text, "hello");
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};

use crate::bounded::InsertBounded;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Inbound, Reply, Runtime, RuntimeError};
use crate::directory::AccountRole;
use crate::ids::{AccountId, AgentId, UserId};
use crate::interaction::Interaction;
use crate::outbox::{DeliveryError, OutboxMessage, ReplySink};
use crate::principal::Actor;
use crate::principal::Principal;
use crate::session::Session;
use crate::store::ForgetReport;

/// A file or other non-text part of a message, described (the runtime
/// passes models text; the description tells the agent it is there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attachment {
    /// What it is: `photo`, `document`, `voice`, ...
    pub kind: String,
    /// Its file name, if the channel gives one.
    pub name: Option<String>,
    /// Its media type, if known.
    pub mime_type: Option<String>,
    /// Its size in bytes, if known.
    pub size: Option<u64>,
    /// The channel's reference to fetch it (a file id, a URL).
    pub reference: String,
}

impl Attachment {
    /// An attachment of `kind` the channel refers to as `reference`.
    pub fn new(kind: impl Into<String>, reference: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            name: None,
            mime_type: None,
            size: None,
            reference: reference.into(),
        }
    }

    /// With a file name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// With a media type.
    pub fn mime_type(mut self, mime_type: impl Into<String>) -> Self {
        self.mime_type = Some(mime_type.into());
        self
    }

    /// With a size in bytes.
    pub fn size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// How the agent reads it: `[attached photo "cat.jpg", image/jpeg, 52341 bytes]`.
    fn describe(&self) -> String {
        let mut parts = vec![match &self.name {
            Some(name) => format!("attached {} \"{name}\"", self.kind),
            None => format!("attached {}", self.kind),
        }];
        if let Some(mime) = &self.mime_type {
            parts.push(mime.clone());
        }
        if let Some(size) = self.size {
            parts.push(format!("{size} bytes"));
        }
        format!("[{}]", parts.join(", "))
    }
}

/// A message as a channel received it, before the runtime sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChannelMessage {
    /// The channel's name (`telegram`, `http`): the session's channel and the
    /// [`Channel`] its replies go to.
    pub channel: String,
    /// The channel's id of the sender.
    pub user: String,
    /// The channel's id of the conversation (a chat id).
    pub chat: String,
    /// The channel's id of the message: a message received twice with the
    /// same id is answered once.
    pub id: Option<String>,
    /// The text.
    pub text: String,
    /// Files and other parts, described to the agent.
    pub attachments: Vec<Attachment>,
    /// Images the model is shown (a photo the channel downloaded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<crate::image::ImageInput>,
}

impl ChannelMessage {
    /// A text message from `user` in `chat` on `channel`.
    pub fn new(
        channel: impl Into<String>,
        user: impl Into<String>,
        chat: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            channel: channel.into(),
            user: user.into(),
            chat: chat.into(),
            id: None,
            text: text.into(),
            attachments: Vec::new(),
            images: Vec::new(),
        }
    }

    /// With the channel's message id, for de-duplication.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// With an attachment.
    pub fn attachment(mut self, attachment: Attachment) -> Self {
        self.attachments.push(attachment);
        self
    }

    /// With an image the model is shown.
    pub fn image(mut self, image: crate::image::ImageInput) -> Self {
        self.images.push(image);
        self
    }

    /// The inbound message the runtime records: the text followed by one
    /// line per attachment, and an id unique across channels and chats.
    pub fn inbound(&self) -> Inbound {
        let mut text = self.text.clone();
        for attachment in &self.attachments {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&attachment.describe());
        }
        let mut inbound = match &self.id {
            Some(id) => Inbound::with_id(text, format!("{}:{}:{id}", self.channel, self.chat)),
            None => Inbound::from(text),
        };
        inbound.images = self.images.clone();
        inbound
    }
}

/// Where a channel's replies go: a chat, a socket, a queue.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// The channel's name, as in [`ChannelMessage::channel`].
    fn name(&self) -> &str;

    /// Delivers one reply (an answer or a job's follow-up) to the chat of
    /// its session ([`ChatKey::of`] reads it from the reply). May be called
    /// again with the same reply after a crash; de-duplicate on
    /// `message.id` where the channel allows.
    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError>;
}

/// A [`ReplySink`] that hands each reply to the [`Channel`] of its session.
///
/// Cheap to clone; clones share the channels, so a host can set the router
/// as the runtime's sink first and add channels once they are built.
#[derive(Clone, Default)]
pub struct ChannelRouter {
    channels: Arc<RwLock<HashMap<String, Arc<dyn Channel>>>>,
}

impl std::fmt::Debug for ChannelRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        f.debug_struct("ChannelRouter")
            .field("channels", &names)
            .finish()
    }
}

impl ChannelRouter {
    /// A router with no channels.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a channel, under its name.
    pub fn add(&self, channel: impl Channel) {
        self.add_arc(Arc::new(channel));
    }

    /// Adds (or replaces) a shared channel, under its name.
    pub fn add_arc(&self, channel: Arc<dyn Channel>) {
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.name().to_owned(), channel);
    }
}

#[async_trait]
impl ReplySink for ChannelRouter {
    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        let channel = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&message.channel)
            .cloned();
        match channel {
            Some(channel) => channel.deliver(message).await,
            // It stays in the outbox until the channel is there (the next
            // `recover` delivers it).
            None => Err(DeliveryError {
                message: format!("no channel `{}` is attached", message.channel),
                retryable: true,
            }),
        }
    }
}

/// Who a channel's user is, as a principal.
#[async_trait]
pub trait PrincipalMap: Send + Sync + 'static {
    /// The principal of `user` of `channel`; may create the user.
    async fn principal(
        &self,
        runtime: &Runtime,
        channel: &str,
        user: &str,
    ) -> Result<Principal, RuntimeError>;

    /// Forgets what this map remembers in process of `principal` (the user
    /// was just deleted from the store), so a later message creates them
    /// afresh. A map that remembers nothing does nothing.
    fn forget(&self, principal: &Principal);
}

/// How many users and chats a host remembers in process; past that, it
/// starts over and reads them from the store again (the store holds them).
pub const REMEMBERED: usize = 4096;

/// The users of one account: a channel user is the account's user whose id
/// is derived from the account, the channel and their channel id (UUIDv5),
/// so the same person on the same channel is always the same user; on first
/// contact they are made a member of the account with a role (`Viewer` by
/// default: they talk to agents, they do not change the account).
#[derive(Debug)]
pub struct AccountMembers {
    account: AccountId,
    role: AccountRole,
    known: Mutex<HashSet<UserId>>,
}

impl AccountMembers {
    /// Users of `account`, joining as members.
    pub fn new(account: AccountId) -> Self {
        Self {
            account,
            role: AccountRole::Viewer,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// Joining with `role` instead.
    pub fn role(mut self, role: AccountRole) -> Self {
        self.role = role;
        self
    }

    /// The account.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The user id of `user` of `channel` in this account.
    pub fn user_id(&self, channel: &str, user: &str) -> UserId {
        let name = format!("{channel}:{user}");
        UserId::from_uuid(Uuid::new_v5(self.account.as_uuid(), name.as_bytes()))
    }
}

#[async_trait]
impl PrincipalMap for AccountMembers {
    async fn principal(
        &self,
        runtime: &Runtime,
        channel: &str,
        user: &str,
    ) -> Result<Principal, RuntimeError> {
        let id = self.user_id(channel, user);
        let known = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id);
        if !known {
            runtime
                .directory()
                .ensure_member(Actor::Account(self.account), id, self.role)
                .await?;
            self.known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert_bounded(id, REMEMBERED);
        }
        Ok(Principal::new(self.account, id))
    }

    fn forget(&self, principal: &Principal) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&principal.user);
    }
}

/// A session's channel key: the chat, which of the chat's sessions it is
/// (`/new` starts the next) and, when the chat chose another agent than the
/// host's own ([`ChannelHost::use_agent`]), the host's agent, so that the
/// chat's sessions of one host are told from those of another host on the
/// same channel. Written `CHAT` for the first, `CHAT#N` after, `CHAT#N@HOST`
/// for a chosen agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatKey {
    /// The channel's chat id.
    pub chat: String,
    /// 0 for the chat's first session, then 1, 2, ...
    pub generation: u32,
    /// The agent of the host that opened the session, when the chat chose
    /// another one; `None` when the session is with the host's own agent.
    pub host: Option<AgentId>,
}

impl ChatKey {
    /// Reads a session key. The generation is the digits after the first
    /// `#` that only digits (and an `@HOST`) follow; a key without one is
    /// the chat's first session, the whole key its chat (so every key names
    /// a chat: `None` is kept for keys a later format may refuse).
    pub fn parse(key: &str) -> Option<Self> {
        for (at, _) in key.match_indices('#') {
            let (chat, rest) = (&key[..at], &key[at + 1..]);
            let (n, host) = match rest.split_once('@') {
                Some((n, host)) if !host.is_empty() => (n, Some(AgentId::new(host))),
                Some(_) => continue,
                None => (rest, None),
            };
            if n.bytes().all(|b| b.is_ascii_digit())
                && let Ok(generation) = n.parse()
            {
                return Some(Self {
                    chat: chat.to_owned(),
                    generation,
                    host,
                });
            }
        }
        Some(Self {
            chat: key.to_owned(),
            generation: 0,
            host: None,
        })
    }

    /// The chat a reply goes to.
    pub fn of(message: &OutboxMessage) -> Option<Self> {
        message.channel_key.as_deref().and_then(Self::parse)
    }
}

impl std::fmt::Display for ChatKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.generation, &self.host) {
            (0, None) => f.write_str(&self.chat),
            (n, None) => write!(f, "{}#{n}", self.chat),
            (n, Some(host)) => write!(f, "{}#{n}@{host}", self.chat),
        }
    }
}

/// What a host needs to put one agent on its channels: principals for
/// channel users, the current session of each chat, and messages recorded
/// or answered through the runtime.
pub struct ChannelHost {
    runtime: Runtime,
    agent: AgentId,
    principals: Arc<dyn PrincipalMap>,
    /// The current session of (channel, user, chat).
    current: Mutex<HashMap<(String, String, String), Session>>,
}

impl std::fmt::Debug for ChannelHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelHost")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl ChannelHost {
    /// A host putting `agent` on channels, with principals from `principals`.
    pub fn new(runtime: Runtime, agent: impl Into<AgentId>, principals: impl PrincipalMap) -> Self {
        Self {
            runtime,
            agent: agent.into(),
            principals: Arc::new(principals),
            current: Mutex::new(HashMap::new()),
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The agent it serves.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// The principal of a channel user.
    pub async fn principal(&self, channel: &str, user: &str) -> Result<Principal, RuntimeError> {
        self.principals
            .principal(&self.runtime, channel, user)
            .await
    }

    /// The chat's current session for the user: the latest one started, or
    /// the first, opened now.
    pub async fn session(
        &self,
        channel: &str,
        user: &str,
        chat: &str,
    ) -> Result<Session, RuntimeError> {
        let slot = (channel.to_owned(), user.to_owned(), chat.to_owned());
        if let Some(s) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
        {
            return Ok(s.clone());
        }
        let principal = self.principal(channel, user).await?;
        match self.latest(&principal, channel, chat).await? {
            Some(session) => {
                self.current
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert_bounded((slot, session.clone()), REMEMBERED);
                Ok(session)
            }
            None => self.open(principal, slot, 0, self.agent.clone()).await,
        }
    }

    /// Starts the chat's next session, with the same agent (the agent no
    /// longer sees the earlier conversation; what it learned as knowledge
    /// stays).
    pub async fn new_session(
        &self,
        channel: &str,
        user: &str,
        chat: &str,
    ) -> Result<Session, RuntimeError> {
        let current = self.session(channel, user, chat).await?;
        let agent = current.agent_id.clone();
        self.next(current, channel, user, chat, agent).await
    }

    /// Starts the chat's next session with `agent` instead of the one it
    /// talks to: an agent of the user's account (or one registered in code)
    /// that the user may use, refused otherwise as
    /// [`Runtime::open_session`] refuses it. The chat keeps the choice, across
    /// restarts, until it chooses again.
    pub async fn use_agent(
        &self,
        channel: &str,
        user: &str,
        chat: &str,
        agent: impl Into<AgentId>,
    ) -> Result<Session, RuntimeError> {
        let current = self.session(channel, user, chat).await?;
        self.next(current, channel, user, chat, agent.into()).await
    }

    async fn next(
        &self,
        current: Session,
        channel: &str,
        user: &str,
        chat: &str,
        agent: AgentId,
    ) -> Result<Session, RuntimeError> {
        let generation = current
            .key
            .as_deref()
            .and_then(ChatKey::parse)
            .map_or(0, |k| k.generation)
            + 1;
        let slot = (channel.to_owned(), user.to_owned(), chat.to_owned());
        self.open(current.principal, slot, generation, agent).await
    }

    /// Records the message durably in the chat's current session for an
    /// interaction worker to answer (see [`Runtime::submit`]); a message
    /// received twice is recorded once.
    pub async fn submit(
        &self,
        message: &ChannelMessage,
    ) -> Result<(Session, Interaction), RuntimeError> {
        let session = self
            .session(&message.channel, &message.user, &message.chat)
            .await?;
        let interaction = self.runtime.submit(session.id, message.inbound()).await?;
        Ok((session, interaction))
    }

    /// Answers the message in the chat's current session (see
    /// [`Runtime::send`]); a message received twice is answered once.
    pub async fn send(&self, message: &ChannelMessage) -> Result<(Session, Reply), RuntimeError> {
        let session = self
            .session(&message.channel, &message.user, &message.chat)
            .await?;
        let reply = self.runtime.send(session.id, message.inbound()).await?;
        Ok((session, reply))
    }

    /// Forgets the channel user: everything they own in the store
    /// ([`Directory::forget_user`](super::Directory::forget_user)) and what this host remembers of them (their
    /// chats' sessions, their membership). Their next message starts from
    /// nothing.
    pub async fn forget(&self, channel: &str, user: &str) -> Result<ForgetReport, RuntimeError> {
        let principal = self.principal(channel, user).await?;
        let report = self
            .runtime
            .directory()
            .forget_user(principal, principal.account, principal.user)
            .await?;
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(c, u, _), _| !(c == channel && u == user));
        self.principals.forget(&principal);
        Ok(report)
    }

    /// The chat's latest session of this host: with its agent, or with an
    /// agent the chat chose through it.
    async fn latest(
        &self,
        principal: &Principal,
        channel: &str,
        chat: &str,
    ) -> Result<Option<Session>, RuntimeError> {
        let sessions = self
            .runtime
            .sessions()
            .of_user(principal, principal.user)
            .await?;
        Ok(sessions
            .into_iter()
            .filter(|s| s.channel == channel && s.principal.account == principal.account)
            .filter_map(|s| {
                let key = s.key.as_deref().and_then(ChatKey::parse)?;
                let ours = match &key.host {
                    None => s.agent_id == self.agent,
                    Some(host) => *host == self.agent,
                };
                (ours && key.chat == chat).then_some((key.generation, s))
            })
            .max_by_key(|(generation, s)| (*generation, s.created_at))
            .map(|(_, s)| s))
    }

    async fn open(
        &self,
        principal: Principal,
        slot: (String, String, String),
        generation: u32,
        agent: AgentId,
    ) -> Result<Session, RuntimeError> {
        let key = ChatKey {
            chat: slot.2.clone(),
            generation,
            host: (agent != self.agent).then(|| self.agent.clone()),
        }
        .to_string();
        let session = self
            .runtime
            .open_session(principal, agent, &slot.0, Some(&key))
            .await?;
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert_bounded((slot, session.clone()), REMEMBERED);
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_keys_read_back() {
        for (key, chat, generation, host) in [
            ("42", "42", 0, None),
            ("42#3", "42", 3, None),
            ("-100#1", "-100", 1, None),
            ("42#2@assistant", "42", 2, Some("assistant")),
            ("42#2@a#b@c", "42", 2, Some("a#b@c")),
        ] {
            let parsed = ChatKey::parse(key);
            assert_eq!(
                parsed,
                Some(ChatKey {
                    chat: chat.to_owned(),
                    generation,
                    host: host.map(AgentId::new),
                })
            );
            assert_eq!(parsed.map(|k| k.to_string()).as_deref(), Some(key));
        }
        // Not a generation: part of the chat id.
        assert_eq!(ChatKey::parse("42#x").unwrap().chat, "42#x");
        assert_eq!(ChatKey::parse("42#3@").unwrap().chat, "42#3@");
        assert_eq!(
            ChatKey::parse("42#99999999999").unwrap().chat,
            "42#99999999999"
        );
    }

    proptest::proptest! {
        #[test]
        fn chat_keys_written_read_back(
            chat in "-?[0-9]{1,15}",
            generation in 0u32..,
            host in proptest::option::of(".{1,20}"),
        ) {
            let key = ChatKey { chat, generation, host: host.map(AgentId::new) };
            proptest::prop_assert_eq!(ChatKey::parse(&key.to_string()), Some(key));
        }

        #[test]
        fn any_key_names_a_chat(key in ".{0,40}") {
            let parsed = ChatKey::parse(&key).expect("every key names a chat");
            proptest::prop_assert!(key.starts_with(&parsed.chat));
        }
    }

    #[test]
    fn attachments_are_described_and_ids_scoped() {
        let m = ChannelMessage::new("telegram", "7", "9", "look")
            .id("15")
            .attachment(
                Attachment::new("photo", "AgAD")
                    .name("cat.jpg")
                    .mime_type("image/jpeg")
                    .size(52341),
            );
        let inbound = m.inbound();
        assert_eq!(
            inbound.text,
            "look\n[attached photo \"cat.jpg\", image/jpeg, 52341 bytes]"
        );
        assert_eq!(inbound.id.as_deref(), Some("telegram:9:15"));
    }
}
