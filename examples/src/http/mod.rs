//! Thinklio's HTTP channel: a thin `axum` host over a [`Runtime`].
//!
//! Everything under `/v1/` needs an API key (`Authorization: Bearer tk_…`,
//! see [`keys`]) and answers JSON, errors included ([`error`]); each key has
//! its own request budget per minute. A message's reply can be streamed as
//! server-sent events (tokens and steps, [`stream`]). The OpenAPI document
//! is generated from the handlers ([`api`]) and served at `/openapi.json`;
//! the web chat is served at `/`.
//!
//! The host is the runtime's channel `http`: replies (answers and job
//! follow-ups) reach it through the outbox and a [`ChannelRouter`], and are
//! read back from the session's history or live from a stream.

pub mod api;
pub mod error;
pub mod keys;
pub mod server;
pub mod stream;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use thinklio_core::channel::{AccountMembers, Channel, ChannelHost, ChannelRouter};
use thinklio_core::{
    AccountId, AgentDefinition, ChatModel, DeliveryError, OutboxMessage, Role, Runtime,
    RuntimeBuilder,
};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use tokio::sync::broadcast;
use utoipa::OpenApi;

use self::error::ApiError;
use self::keys::{ApiKey, ApiKeys, Verdict};
use crate::offline::ByModel;

/// The channel name of sessions opened through the HTTP API.
pub const CHANNEL: &str = "http";

/// The agent that runs jobs dispatched through `POST /v1/jobs`.
pub const DISPATCH_AGENT: &str = "dispatch";

/// The model id of [`DISPATCH_AGENT`]: answered by the host, not a provider.
const DISPATCH_MODEL: &str = "thinklio-dispatch";

/// The web chat page (plain HTML and JavaScript, no build step).
const WEB_CHAT: &str = include_str!("chat.html");

/// Where the HTTP host's replies arrive: every reply of an `http` session is
/// broadcast to the streams listening on its session, then counts as
/// delivered (it stays readable in the session's history).
#[derive(Clone)]
pub struct HttpChannel {
    replies: broadcast::Sender<OutboxMessage>,
}

impl HttpChannel {
    /// A channel with no listeners yet.
    pub fn new() -> Self {
        Self {
            replies: broadcast::channel(1024).0,
        }
    }

    /// Replies as they are delivered.
    pub fn subscribe(&self) -> broadcast::Receiver<OutboxMessage> {
        self.replies.subscribe()
    }
}

impl Default for HttpChannel {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Channel for HttpChannel {
    fn name(&self) -> &str {
        CHANNEL
    }

    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        // Nobody listening is fine: the reply is in the session's history.
        let _ = self.replies.send(message.clone());
        Ok(())
    }
}

/// The dispatch agent's model: a request `{"capability", "input"}` becomes
/// that call; anything else (a tool result, a job's follow-up) is repeated.
fn dispatch_model() -> ScriptedModel {
    ScriptedModel::responder(|request| {
        let Some(last) = request.messages.last() else {
            return ScriptedReply::text("");
        };
        if last.role == Role::User
            && let Ok(call) = serde_json::from_str::<api::DispatchCall>(&last.content)
        {
            return ScriptedReply::tool_call("dispatch", call.capability, call.input.to_string());
        }
        ScriptedReply::text(last.content.clone())
    })
    .named(DISPATCH_MODEL)
}

/// Prepares a runtime builder for the HTTP host: wraps `model` so that
/// `POST /v1/jobs` can dispatch, adds the dispatch agent (which may call,
/// always deferred, the capabilities in `dispatchable`), and sets `router`
/// as the reply sink with the HTTP channel in it. Add agents, capabilities
/// and job callbacks to the builder as usual.
pub fn prepare(
    builder: RuntimeBuilder,
    model: Arc<dyn ChatModel>,
    dispatchable: &[&str],
    router: &ChannelRouter,
    channel: &HttpChannel,
) -> RuntimeBuilder {
    router.add(channel.clone());
    let names: Vec<String> = dispatchable.iter().map(|s| (*s).to_owned()).collect();
    builder
        .model(ByModel::new(DISPATCH_MODEL, dispatch_model(), model))
        .agent(
            AgentDefinition::new(DISPATCH_AGENT, DISPATCH_MODEL)
                .capabilities(names.clone())
                .defer(names),
        )
        .reply_sink(router.clone())
}

/// Settings of the HTTP host.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The agent sessions talk to.
    pub agent: String,
    /// Requests each key may make per minute.
    pub requests_per_minute: u32,
}

impl HttpConfig {
    /// Sessions with `agent`, 600 requests per key per minute.
    pub fn new(agent: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            requests_per_minute: 600,
        }
    }

    /// With this many requests per key per minute.
    pub fn requests_per_minute(mut self, n: u32) -> Self {
        self.requests_per_minute = n;
        self
    }
}

/// The HTTP host's state.
pub struct HttpHost {
    runtime: Runtime,
    keys: ApiKeys,
    channel: HttpChannel,
    config: HttpConfig,
    limiter: DefaultKeyedRateLimiter<String>,
    /// One channel host per account (principals are per account).
    hosts: Mutex<HashMap<AccountId, Arc<ChannelHost>>>,
}

impl std::fmt::Debug for HttpHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHost")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The caller of a `/v1/` route, as its key says.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key used.
    pub key: ApiKey,
}

impl Caller {
    /// The account the key acts for.
    pub fn account(&self) -> AccountId {
        self.key.account
    }
}

impl HttpHost {
    /// A host over `runtime` (prepared with [`prepare`]), with `keys`.
    pub fn new(
        runtime: Runtime,
        keys: ApiKeys,
        channel: HttpChannel,
        config: HttpConfig,
    ) -> Arc<Self> {
        let per_minute =
            NonZeroU32::new(config.requests_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Arc::new(Self {
            runtime,
            keys,
            channel,
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            config,
            hosts: Mutex::new(HashMap::new()),
        })
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The key table.
    pub fn keys(&self) -> &ApiKeys {
        &self.keys
    }

    /// The channel host of an account.
    pub(crate) fn host(&self, account: AccountId, agent: &str) -> Arc<ChannelHost> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if agent != self.config.agent {
            // The dispatch agent's sessions: not cached, rarely used.
            return Arc::new(ChannelHost::new(
                self.runtime.clone(),
                agent,
                AccountMembers::new(account),
            ));
        }
        Arc::clone(hosts.entry(account).or_insert_with(|| {
            Arc::new(ChannelHost::new(
                self.runtime.clone(),
                self.config.agent.clone(),
                AccountMembers::new(account),
            ))
        }))
    }

    /// The app: `/v1/` API, `/openapi.json`, the web chat at `/`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let (keyed, keyed_doc) = api::keyed_routes()
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(self),
                authenticate,
            ))
            .split_for_parts();
        let (callbacks, callback_doc) = api::callback_routes().split_for_parts();
        let mut doc = api::ApiDoc::openapi();
        doc.merge(keyed_doc);
        doc.merge(callback_doc);
        let doc = Arc::new(doc);
        keyed
            .merge(callbacks)
            .route(
                "/v1/{*rest}",
                axum::routing::any(unknown_route).layer(axum::middleware::from_fn_with_state(
                    Arc::clone(self),
                    authenticate,
                )),
            )
            .route(
                "/openapi.json",
                axum::routing::get(move || {
                    let doc = Arc::clone(&doc);
                    async move { axum::Json(doc.as_ref().clone()) }
                }),
            )
            .route("/", axum::routing::get(|| async { Html(WEB_CHAT) }))
            .with_state(Arc::clone(self))
    }
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("route.not_found", "no such route")
}

/// The key a request presents: `Authorization: Bearer KEY` or `X-Api-Key: KEY`.
pub(crate) fn presented_key(request: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(v) = request
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|k| !k.is_empty());
    }
    request
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Checks the key and its request budget; the route sees the [`Caller`].
async fn authenticate(
    State(host): State<Arc<HttpHost>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(secret) = presented_key(request.headers()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "auth.missing_key",
            "an API key is required: Authorization: Bearer <key>",
        ));
    };
    let key = match host.keys.verify(secret).await? {
        Verdict::Valid(key) => key,
        Verdict::Revoked => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "auth.revoked_key",
                "this API key was revoked",
            ));
        }
        Verdict::Unknown => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "auth.invalid_key",
                "this API key is not known",
            ));
        }
    };
    if let Err(not_until) = host.limiter.check_key(&key.id) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this key may make {} requests per minute; try again in {} ms",
                host.config.requests_per_minute,
                wait.as_millis()
            ),
        );
        e.retry_after = Some(wait.as_secs().max(1));
        return Err(e);
    }
    request.extensions_mut().insert(Caller { key });
    Ok(next.run(request).await)
}

/// The health answer (no key needed): the server is up.
pub async fn health() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}
