//! Thinklio's HTTP channel: a thin `axum` host over a [`Runtime`].
//!
//! Everything under `/v1/` needs an API key (`Authorization: Bearer tk_…`,
//! see [`keys`]) of a scope that covers the route (`chat` for
//! conversations, `admin` for the account's keys, usage and users), and
//! answers JSON, errors included ([`error`]). Each key has its own request
//! budget per minute, each account one for all its keys together, and each
//! client address a budget of failed key checks (and of job callbacks), so
//! keys cannot be guessed. A message's reply can be streamed as
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
use std::net::IpAddr;
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
use thinklio_core::{AccountId, DeliveryError, OutboxMessage, Runtime, RuntimeBuilder, SessionId};
use tokio::sync::broadcast;
use utoipa::OpenApi;

use self::error::ApiError;
use self::keys::{ApiKey, ApiKeys, KeyScope, Verdict};

/// The channel name of sessions opened through the HTTP API.
pub const CHANNEL: &str = "http";

/// The chat of each user's session that jobs dispatched through
/// `POST /v1/jobs` run in (with the host's agent).
pub const JOBS_CHAT: &str = "jobs";

/// The web chat page (plain HTML and JavaScript, no build step).
const WEB_CHAT: &str = include_str!("chat.html");
/// The Agent Studio: one page over the agents and templates routes.
const STUDIO: &str = include_str!("studio.html");

/// Where the HTTP host's replies arrive: every reply of an `http` session is
/// handed to the streams listening on its session, then counts as
/// delivered (it stays readable in the session's history). Each session
/// streamed has a channel of its own, dropped once nobody listens.
#[derive(Clone, Default)]
pub struct HttpChannel {
    replies: Arc<Mutex<HashMap<SessionId, broadcast::Sender<OutboxMessage>>>>,
}

impl HttpChannel {
    /// A channel with no listeners yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The replies of `session` as they are delivered.
    pub fn subscribe(&self, session: SessionId) -> broadcast::Receiver<OutboxMessage> {
        let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        replies.retain(|_, s| s.receiver_count() > 0);
        replies
            .entry(session)
            .or_insert_with(|| broadcast::channel(64).0)
            .subscribe()
    }
}

#[async_trait]
impl Channel for HttpChannel {
    fn name(&self) -> &str {
        CHANNEL
    }

    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        // Nobody listening is fine: the reply is in the session's history.
        if let Some(sender) = replies.get(&message.session_id)
            && sender.send(message.clone()).is_err()
        {
            replies.remove(&message.session_id);
        }
        Ok(())
    }
}

/// Prepares a runtime builder for the HTTP host: sets `router` as the
/// reply sink with the HTTP channel in it. Add agents, capabilities and job
/// callbacks to the builder as usual; the capabilities `POST /v1/jobs` may
/// dispatch are [`HttpConfig::dispatchable`] (and must be the agent's).
pub fn prepare(
    builder: RuntimeBuilder,
    router: &ChannelRouter,
    channel: &HttpChannel,
) -> RuntimeBuilder {
    router.add(channel.clone());
    builder.reply_sink(router.clone())
}

/// Settings of the HTTP host.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The agent sessions talk to.
    pub agent: String,
    /// Requests each key may make per minute.
    pub requests_per_minute: u32,
    /// Requests all keys of one account may make per minute together.
    pub account_requests_per_minute: u32,
    /// Failed key checks (unknown or revoked keys, wrong job tokens) one
    /// client address may make per minute; past that, its requests are
    /// refused before any key is looked at until the minute is over.
    pub failed_auth_per_minute: u32,
    /// Job callbacks one client address may post per minute.
    pub callbacks_per_minute: u32,
    /// Live keys an account may have at once.
    pub max_keys_per_account: usize,
    /// The largest request body read, in bytes.
    pub max_body_bytes: usize,
    /// The largest body of `POST /v1/sessions/{id}/messages`, which may
    /// carry images, in bytes (each image is also held to the runtime's
    /// `max_image_bytes`).
    pub max_message_body_bytes: usize,
    /// How long a request may take to be answered (an answered stream may
    /// go on for longer): past it, `504 request.timeout`, and the work it
    /// started carries on (a message's reply lands in the history).
    pub request_timeout: std::time::Duration,
    /// The capabilities `POST /v1/jobs` may dispatch (each also one the
    /// agent may call). None unless set.
    pub dispatchable: Vec<String>,
}

impl HttpConfig {
    /// Sessions with `agent`; 600 requests per key and 1,800 per account
    /// per minute; 20 failed key checks and 600 callbacks per client address
    /// per minute; 100 live keys per account; bodies up to 1 MiB (messages,
    /// which may carry images, up to 16 MiB); answers within 120 s.
    pub fn new(agent: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            requests_per_minute: 600,
            account_requests_per_minute: 1800,
            failed_auth_per_minute: 20,
            callbacks_per_minute: 600,
            max_keys_per_account: 100,
            max_body_bytes: 1024 * 1024,
            max_message_body_bytes: 16 * 1024 * 1024,
            request_timeout: std::time::Duration::from_secs(120),
            dispatchable: Vec::new(),
        }
    }

    /// With these capabilities dispatchable through `POST /v1/jobs`.
    pub fn dispatchable<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.dispatchable = names.into_iter().map(Into::into).collect();
        self
    }

    /// With this many requests per key per minute.
    pub fn requests_per_minute(mut self, n: u32) -> Self {
        self.requests_per_minute = n;
        self
    }

    /// With this many requests per account per minute.
    pub fn account_requests_per_minute(mut self, n: u32) -> Self {
        self.account_requests_per_minute = n;
        self
    }

    /// With this many failed key checks per client address per minute.
    pub fn failed_auth_per_minute(mut self, n: u32) -> Self {
        self.failed_auth_per_minute = n;
        self
    }

    /// With this many job callbacks per client address per minute.
    pub fn callbacks_per_minute(mut self, n: u32) -> Self {
        self.callbacks_per_minute = n;
        self
    }

    /// With at most this many live keys per account.
    pub fn max_keys_per_account(mut self, n: usize) -> Self {
        self.max_keys_per_account = n;
        self
    }

    /// With request bodies up to `bytes`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// With answers due within `timeout`.
    pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// How many client addresses a per-address limiter remembers before it
/// forgets those whose budget is full again.
const ADDRESSES: usize = 10_000;

fn per_minute<K: std::hash::Hash + Eq + Clone>(n: u32) -> DefaultKeyedRateLimiter<K> {
    RateLimiter::keyed(Quota::per_minute(
        NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN),
    ))
}

/// The HTTP host's limiters: per key, per account, per client address.
struct Limits {
    key: DefaultKeyedRateLimiter<String>,
    account: DefaultKeyedRateLimiter<AccountId>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    callbacks: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses out of failed checks, until when: refused before their
    /// key is looked at. Bounded by [`ADDRESSES`].
    blocked: Mutex<HashMap<IpAddr, std::time::Instant>>,
}

impl Limits {
    fn new(config: &HttpConfig) -> Self {
        Self {
            key: per_minute(config.requests_per_minute),
            account: per_minute(config.account_requests_per_minute),
            failures: per_minute(config.failed_auth_per_minute),
            callbacks: per_minute(config.callbacks_per_minute),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// How long `client` must wait before its key is checked again, if it
    /// ran out of failed checks.
    fn blocked(&self, client: IpAddr) -> Option<std::time::Duration> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let until = *blocked.get(&client)?;
        let now = std::time::Instant::now();
        if until <= now {
            blocked.remove(&client);
            return None;
        }
        Some(until - now)
    }

    /// Counts a failed check by `client`; once its budget is spent it is
    /// blocked until the budget has a check again.
    fn failed(&self, client: IpAddr) {
        if let Err(not_until) = self.failures.check_key(&client) {
            let wait = wait_of(not_until);
            let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            if blocked.len() >= ADDRESSES {
                let now = std::time::Instant::now();
                blocked.retain(|_, until| *until > now);
            }
            if blocked.len() < ADDRESSES {
                blocked.insert(client, std::time::Instant::now() + wait);
            }
        }
        forget_idle(&self.failures);
    }
}

/// A keyed limiter by client address forgets the addresses whose budget is
/// full again once it holds many, so hostile clients cannot grow it.
fn forget_idle<K: std::hash::Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>) {
    if limiter.len() > ADDRESSES {
        limiter.retain_recent();
    }
}

/// A `429` that says how long to wait.
fn too_many(code: &str, message: String, wait: std::time::Duration) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message);
    e.retry_after = Some(wait.as_secs().max(1));
    e
}

fn wait_of(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> std::time::Duration {
    not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::DefaultClock::default(),
    ))
}

/// The HTTP host's state.
pub struct HttpHost {
    runtime: Runtime,
    keys: ApiKeys,
    channel: HttpChannel,
    config: HttpConfig,
    limits: Limits,
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

    /// The key as the runtime's actor: the host acting for its account
    /// (what a chat key may do beyond that, the routes check).
    pub fn actor(&self) -> thinklio_core::Actor {
        thinklio_core::Actor::Account(self.key.account)
    }

    /// Refuses unless the key's scope covers `scope`.
    pub fn require(&self, scope: KeyScope) -> Result<(), ApiError> {
        if self.key.scope >= scope {
            Ok(())
        } else {
            Err(ApiError::scope(scope.as_str()))
        }
    }
}

/// The address a request came from (`unspecified` when the server was not
/// started with connection info, as [`HttpHost::serve`] does).
pub(crate) fn client_of(request: &axum::http::Extensions) -> IpAddr {
    request
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

impl HttpHost {
    /// A host over `runtime` (prepared with [`prepare`]), with `keys`.
    pub fn new(
        runtime: Runtime,
        keys: ApiKeys,
        channel: HttpChannel,
        config: HttpConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            keys,
            channel,
            limits: Limits::new(&config),
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
    pub(crate) fn host(&self, account: AccountId) -> Arc<ChannelHost> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(hosts.entry(account).or_insert_with(|| {
            Arc::new(ChannelHost::new(
                self.runtime.clone(),
                self.config.agent.clone(),
                AccountMembers::new(account),
            ))
        }))
    }

    /// The app: `/v1/` API, `/openapi.json`, the web chat at `/`. Every
    /// route reads at most [`HttpConfig::max_body_bytes`], answers within
    /// [`HttpConfig::request_timeout`], and a panic in a handler is a JSON
    /// `500`, never a dropped connection.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let (keyed, keyed_doc) = api::keyed_routes(self.config.max_message_body_bytes)
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(self),
                authenticate,
            ))
            .split_for_parts();
        let (callbacks, callback_doc) = api::callback_routes()
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(self),
                limit_callbacks,
            ))
            .split_for_parts();
        let mut doc = api::ApiDoc::openapi();
        doc.merge(keyed_doc);
        doc.merge(callback_doc);
        let doc = Arc::new(doc);
        let app = keyed
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
            .route("/studio", axum::routing::get(|| async { Html(STUDIO) }))
            .fallback(unknown_route)
            .with_state(Arc::clone(self));
        self.guard(app)
    }

    /// The layers every route of the host runs under: the body limit, the
    /// answer timeout, and panics turned into a JSON `500`.
    pub fn guard(&self, app: axum::Router) -> axum::Router {
        let timeout = self.config.request_timeout;
        app.layer(axum::middleware::from_fn(move |request, next| {
            answer_within(timeout, request, next)
        }))
        .layer(axum::extract::DefaultBodyLimit::max(
            self.config.max_body_bytes,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
    }

    /// Serves the app on `listener` (with each client's address, for the
    /// per-address limits) until `shutdown` resolves; then stops taking
    /// connections and lets the requests in flight finish.
    pub async fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_with(listener, axum::Router::new(), shutdown)
            .await
    }

    /// [`serve`](Self::serve), with the routes of `extra` beside the API
    /// (the server's `/healthz` and `/readyz`).
    pub async fn serve_with(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        extra: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = extra
            .merge(self.router())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// `504 request.timeout` when the handler takes longer than `timeout` to
/// answer. Handlers hand long work to a task of its own, so it carries on.
async fn answer_within(timeout: std::time::Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "request.timeout",
            format!(
                "no answer within {} s; a message's reply will be in the session's history",
                timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

/// A handler's panic as the API's JSON `500`.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    ApiError::internal("host.panicked", &detail).into_response()
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

/// Checks the key and the request budgets; the route sees the [`Caller`].
async fn authenticate(
    State(host): State<Arc<HttpHost>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client = client_of(request.extensions());
    if let Some(wait) = host.limits.blocked(client) {
        return Err(too_many(
            "auth.too_many_failures",
            format!(
                "too many failed key checks from this address; try again in {} s",
                wait.as_secs().max(1)
            ),
            wait,
        ));
    }
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
            host.limits.failed(client);
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "auth.revoked_key",
                "this API key was revoked",
            ));
        }
        Verdict::Unknown => {
            host.limits.failed(client);
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "auth.invalid_key",
                "this API key is not known",
            ));
        }
    };
    if let Err(not_until) = host.limits.key.check_key(&key.id) {
        let wait = wait_of(not_until);
        return Err(too_many(
            "rate_limited",
            format!(
                "this key may make {} requests per minute; try again in {} ms",
                host.config.requests_per_minute,
                wait.as_millis()
            ),
            wait,
        ));
    }
    if let Err(not_until) = host.limits.account.check_key(&key.account) {
        let wait = wait_of(not_until);
        return Err(too_many(
            "rate_limited.account",
            format!(
                "this account's keys may make {} requests per minute together; try again in {} ms",
                host.config.account_requests_per_minute,
                wait.as_millis()
            ),
            wait,
        ));
    }
    request.extensions_mut().insert(Caller { key });
    Ok(next.run(request).await)
}

/// The job callback's budgets: callbacks per client address, and the same
/// failed-check budget as keys (a wrong job token counts as one).
async fn limit_callbacks(
    State(host): State<Arc<HttpHost>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client = client_of(request.extensions());
    if let Some(wait) = host.limits.blocked(client) {
        return Err(too_many(
            "auth.too_many_failures",
            "too many failed checks from this address".to_owned(),
            wait,
        ));
    }
    if let Err(not_until) = host.limits.callbacks.check_key(&client) {
        return Err(too_many(
            "rate_limited",
            format!(
                "this address may post {} job callbacks per minute",
                host.config.callbacks_per_minute
            ),
            wait_of(not_until),
        ));
    }
    forget_idle(&host.limits.callbacks);
    let response = next.run(request).await;
    if matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        host.limits.failed(client);
    }
    Ok(response)
}

/// The health answer (no key needed): the server is up.
pub async fn health() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}
