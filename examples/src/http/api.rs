//! The `/v1/` routes and their OpenAPI description.

use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thinklio_core::channel::{AccountMembers, ChannelMessage};
use thinklio_core::{
    AgentId, BudgetPeriod, CancelledBy, Clock, FactOwner, InteractionId, JobId, JobReport, NewFact,
    Reply, Session, SessionId, StepKind, SystemClock, TeamId, UsageFilter, UserId,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::keys::ApiKey;
use super::{CHANNEL, Caller, DISPATCH_AGENT, HttpHost, stream};

type Host = State<Arc<HttpHost>>;

/// The OpenAPI document's frame; the paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Thinklio HTTP API",
        description = "Sessions, messages (streamed as server-sent events), jobs, knowledge and usage of a Thinklio runtime. Every /v1/ route needs an API key: `Authorization: Bearer tk_…`.",
        version = "1"
    ),
    modifiers(&ApiKeyAuth),
    security(("api_key" = [])),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes that need an API key.
pub fn keyed_routes() -> OpenApiRouter<Arc<HttpHost>> {
    OpenApiRouter::new()
        .routes(routes!(create_session, list_sessions))
        .routes(routes!(send_message, history))
        .routes(routes!(session_stream))
        .routes(routes!(interaction_steps))
        .routes(routes!(dispatch_job))
        .routes(routes!(job_status))
        .routes(routes!(cancel_job))
        .routes(routes!(add_fact))
        .routes(routes!(search_facts))
        .routes(routes!(export_facts, delete_facts))
        .routes(routes!(usage))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

/// The job callback: authorised by the job's own token, not an API key.
pub fn callback_routes() -> OpenApiRouter<Arc<HttpHost>> {
    OpenApiRouter::new().routes(routes!(report_job))
}

fn parse_id<T: FromStr>(what: &str, raw: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request("request.bad_id", format!("`{raw}` is not a {what} id")))
}

fn user_id(caller: &Caller, user: &str) -> Result<UserId, ApiError> {
    if user.trim().is_empty() {
        return Err(ApiError::bad_request(
            "request.missing_user",
            "`user` is required",
        ));
    }
    Ok(AccountMembers::new(caller.account()).user_id(CHANNEL, user))
}

/// The session, if it is the caller's account's.
async fn own_session(host: &HttpHost, caller: &Caller, raw: &str) -> Result<Session, ApiError> {
    let id: SessionId = parse_id("session", raw)?;
    let session = host
        .runtime
        .store()
        .session(id)
        .await
        .map_err(|e| match e {
            thinklio_core::StoreError::NotFound { .. } => {
                ApiError::not_found("session.not_found", format!("no session {id}"))
            }
            other => other.into(),
        })?;
    if session.principal.account != caller.account() {
        return Err(ApiError::wrong_account("session"));
    }
    Ok(session)
}

impl From<thinklio_core::StoreError> for ApiError {
    fn from(e: thinklio_core::StoreError) -> Self {
        thinklio_core::RuntimeError::from(e).into()
    }
}

/// A session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Its id.
    pub id: String,
    /// The user it acts for (the runtime's user id).
    pub user_id: String,
    /// The agent.
    pub agent: String,
    /// The conversation key (`CHAT` or `CHAT#N`).
    pub key: Option<String>,
    /// When it was opened (ms since the Unix epoch).
    pub created_at: i64,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            id: s.id.to_string(),
            user_id: s.principal.user.to_string(),
            agent: s.agent_id.to_string(),
            key: s.key.clone(),
            created_at: s.created_at.as_millis(),
        }
    }
}

/// Opens a conversation.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSession {
    /// Your id of the user (any string; the same string is the same user).
    pub user: String,
    /// Your id of the conversation; a new one when left out. The same user
    /// and conversation give the same session.
    pub conversation: Option<String>,
    /// Start the conversation's next session (the agent forgets the chat so far).
    #[serde(default)]
    pub new: bool,
}

/// Opens (or finds) a session of the account's agent for a user.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = SessionView), (status = 401, body = ErrorBody)))]
async fn create_session(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Json(body): Json<CreateSession>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    user_id(&caller, &body.user)?;
    let conversation = body
        .conversation
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let channel_host = host.host(caller.account(), &host.config.agent);
    let session = if body.new {
        channel_host
            .new_session(CHANNEL, &body.user, &conversation)
            .await?
    } else {
        channel_host
            .session(CHANNEL, &body.user, &conversation)
            .await?
    };
    Ok((StatusCode::CREATED, Json(SessionView::from(&session))))
}

/// Whose sessions.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UserQuery {
    /// Your id of the user.
    pub user: String,
}

/// Lists a user's sessions, oldest first.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(UserQuery),
    responses((status = 200, body = [SessionView]), (status = 401, body = ErrorBody)))]
async fn list_sessions(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Query(q): Query<UserQuery>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let user = user_id(&caller, &q.user)?;
    let mut sessions: Vec<SessionView> = host
        .runtime
        .store()
        .sessions_of_user(user)
        .await?
        .iter()
        .filter(|s| s.principal.account == caller.account() && s.channel == CHANNEL)
        .map(SessionView::from)
        .collect();
    sessions.sort_by_key(|s| s.created_at);
    Ok(Json(sessions))
}

/// A message to the session's agent.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendMessage {
    /// The text.
    pub text: String,
    /// Your id of the message: sending it again returns the same reply
    /// instead of asking twice.
    pub id: Option<String>,
}

/// The agent's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyView {
    /// The interaction that produced it.
    pub interaction_id: String,
    /// The text.
    pub text: String,
    /// Steps taken.
    pub steps: u32,
    /// Input tokens used.
    pub input_tokens: u64,
    /// Output tokens used.
    pub output_tokens: u64,
    /// What it cost, in US dollars.
    pub cost_usd: f64,
}

impl From<&Reply> for ReplyView {
    fn from(r: &Reply) -> Self {
        Self {
            interaction_id: r.interaction_id.to_string(),
            text: r.text.clone(),
            steps: r.steps,
            input_tokens: r.usage.input_tokens,
            output_tokens: r.usage.output_tokens,
            cost_usd: r.cost.as_usd(),
        }
    }
}

/// Streaming choice.
#[derive(Debug, Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Answer as server-sent events (also chosen by `Accept: text/event-stream`).
    #[serde(default)]
    pub stream: bool,
}

/// Sends a message and returns the reply; streamed as server-sent events
/// (`interaction`, `step`, `token`, `reply`, `error`) when asked.
#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "The session"), StreamQuery),
    request_body = SendMessage,
    responses(
        (status = 200, body = ReplyView, description = "The reply, or an event stream (text/event-stream)"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
async fn send_message(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
    Json(body): Json<SendMessage>,
) -> Result<Response, ApiError> {
    let session = own_session(&host, &caller, &id).await?;
    let mut inbound = thinklio_core::Inbound::from(body.text);
    if let Some(message_id) = body.id {
        inbound = thinklio_core::Inbound::with_id(
            inbound.text,
            format!("{CHANNEL}:{}:{message_id}", session.id),
        );
    }
    let wants_stream = q.stream
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        return Ok(stream::reply_stream(Arc::clone(&host), session, inbound).into_response());
    }
    let reply = host.runtime.send(session.id, inbound).await?;
    Ok(Json(ReplyView::from(&reply)).into_response())
}

/// One exchange of a session.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnView {
    /// The interaction.
    pub interaction_id: String,
    /// What was said (for a job's follow-up, the notice).
    pub user: String,
    /// The reply.
    pub assistant: String,
}

/// The session's exchanges so far, oldest first (job follow-ups included).
#[utoipa::path(get, path = "/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    responses((status = 200, body = [TurnView]), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn history(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Vec<TurnView>>, ApiError> {
    let session = own_session(&host, &caller, &id).await?;
    let turns = host
        .runtime
        .store()
        .history(session.id, i64::MAX, 500)
        .await?;
    Ok(Json(
        turns
            .into_iter()
            .map(|t| TurnView {
                interaction_id: t.interaction_id.to_string(),
                user: t.user,
                assistant: t.assistant,
            })
            .collect(),
    ))
}

/// Streams everything that happens in the session from now on, as
/// server-sent events: `step`, `token`, and `reply` for every reply (answers
/// and job follow-ups), until the client disconnects.
#[utoipa::path(get, path = "/v1/sessions/{id}/events", tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    responses((status = 200, description = "An event stream (text/event-stream)"), (status = 401, body = ErrorBody)))]
async fn session_stream(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = own_session(&host, &caller, &id).await?;
    Ok(stream::session_stream(Arc::clone(&host), session).into_response())
}

/// The steps of an interaction, as stored (input, output, error, tokens, cost).
#[utoipa::path(get, path = "/v1/interactions/{id}/steps", tag = "sessions",
    params(("id" = String, Path, description = "The interaction")),
    responses((status = 200, body = Vec<Object>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn interaction_steps(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: InteractionId = parse_id("interaction", &id)?;
    let store = host.runtime.store();
    let interaction = store.interaction(id).await.map_err(|e| match e {
        thinklio_core::StoreError::NotFound { .. } => {
            ApiError::not_found("interaction.not_found", format!("no interaction {id}"))
        }
        other => other.into(),
    })?;
    if interaction.principal.account != caller.account() {
        return Err(ApiError::wrong_account("interaction"));
    }
    let steps = store.steps(id).await?;
    Ok(Json(json!(steps)))
}

/// The call a dispatch makes (also the dispatch agent's message).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DispatchCall {
    /// The capability that does the work.
    pub capability: String,
    /// Its input, as its schema asks.
    #[serde(default)]
    pub input: Value,
}

/// Work to run in the background.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DispatchJob {
    /// Your id of the user it works for.
    pub user: String,
    /// The capability that does the work (one the host lets the API dispatch).
    pub capability: String,
    /// Its input.
    #[serde(default)]
    pub input: Value,
    /// Your id of the request: dispatching again with it returns the same job.
    pub id: Option<String>,
}

/// A job with its subjobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// The job as stored (state, progress, result, error, ...).
    #[schema(value_type = Object)]
    pub job: thinklio_core::Job,
    /// Its subjobs.
    #[schema(value_type = Vec<Object>)]
    pub subjobs: Vec<thinklio_core::Job>,
}

async fn job_view(host: &HttpHost, job: thinklio_core::Job) -> Result<JobView, ApiError> {
    let subjobs = host.runtime.subjobs(job.id).await?;
    Ok(JobView { job, subjobs })
}

/// Dispatches a capability as a job: recorded as an interaction of the
/// user's `jobs` conversation (durable, governed, budgeted like any call),
/// run by the job worker; the job's result comes back to that conversation
/// as a follow-up and is readable here.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = DispatchJob,
    responses((status = 202, body = JobView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn dispatch_job(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Json(body): Json<DispatchJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    user_id(&caller, &body.user)?;
    let call = serde_json::to_string(&DispatchCall {
        capability: body.capability.clone(),
        input: body.input,
    })
    .map_err(|e| ApiError::bad_request("request.bad_input", e.to_string()))?;
    let mut message = ChannelMessage::new(CHANNEL, &body.user, "jobs", call);
    message = message.id(body.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()));
    let dispatcher = host.host(caller.account(), DISPATCH_AGENT);
    let (_, reply) = dispatcher.send(&message).await?;
    let steps = host.runtime.store().steps(reply.interaction_id).await?;
    let act = steps.iter().rev().find(|s| s.kind == StepKind::Act);
    let job_id = act
        .and_then(|s| s.output.as_ref())
        .and_then(|o| o.pointer("/result/job_id"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<JobId>().ok());
    match job_id {
        Some(id) => {
            let job = host.runtime.job(id).await?;
            Ok((StatusCode::ACCEPTED, Json(job_view(&host, job).await?)))
        }
        None => {
            let why = act.and_then(|s| s.error.as_ref()).map_or_else(
                || "the capability was not called".to_owned(),
                |e| format!("{}: {}", e.code, e.message),
            );
            Err(ApiError::bad_request(
                "job.not_dispatched",
                format!("`{}` could not be dispatched: {why}", body.capability),
            ))
        }
    }
}

async fn own_job(
    host: &HttpHost,
    caller: &Caller,
    raw: &str,
) -> Result<thinklio_core::Job, ApiError> {
    let id: JobId = parse_id("job", raw)?;
    let job = host.runtime.job(id).await.map_err(|e| match e {
        thinklio_core::RuntimeError::Store(thinklio_core::StoreError::NotFound { .. }) => {
            ApiError::not_found("job.not_found", format!("no job {id}"))
        }
        other => other.into(),
    })?;
    if job.principal.account != caller.account() {
        return Err(ApiError::wrong_account("job"));
    }
    Ok(job)
}

/// A job's state, progress and result, with its subjobs.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job")),
    responses((status = 200, body = JobView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn job_status(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = own_job(&host, &caller, &id).await?;
    Ok(Json(job_view(&host, job).await?))
}

/// Why a job is cancelled.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CancelJob {
    /// The reason, told to the job's observers.
    pub reason: Option<String>,
}

/// Cancels a job and its unfinished subjobs.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job")), request_body = CancelJob,
    responses((status = 200, body = JobView), (status = 409, body = ErrorBody, description = "The job has ended")))]
async fn cancel_job(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Option<Json<CancelJob>>,
) -> Result<Json<JobView>, ApiError> {
    let job = own_job(&host, &caller, &id).await?;
    let reason = body
        .and_then(|Json(b)| b.reason)
        .unwrap_or_else(|| "cancelled through the HTTP API".to_owned());
    let job = host
        .runtime
        .cancel_job(job.id, CancelledBy::System, &reason)
        .await?;
    Ok(Json(job_view(&host, job).await?))
}

/// The callback of outside work on a job (a webhook dispatched as a job
/// posts here, with the token it was given as `Authorization: Bearer`):
/// `{"status": "progress", "progress": …}`, `{"status": "resolved",
/// "result": …, "context": …}` or `{"status": "failed", "error": "…"}`.
#[utoipa::path(post, path = "/v1/jobs/{id}/report", tag = "jobs",
    params(("id" = String, Path, description = "The job")),
    request_body(content = Object, description = "A job report"),
    responses((status = 200, body = JobView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn report_job(
    State(host): Host,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(report): Json<Value>,
) -> Result<Json<JobView>, ApiError> {
    let Some(token) = super::presented_key(&headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "auth.missing_key",
            "the job's callback token is required: Authorization: Bearer <token>",
        ));
    };
    let id: JobId = parse_id("job", &id)?;
    let report: JobReport = serde_json::from_value(report)
        .map_err(|e| ApiError::bad_request("job.bad_report", e.to_string()))?;
    let job = host.runtime.report_job(id, token, report).await?;
    Ok(Json(job_view(&host, job).await?))
}

/// Whose layer a fact is in.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LayerName {
    /// The whole account.
    Account,
    /// One agent (`agent`).
    Agent,
    /// One team (`team`).
    Team,
    /// One user (`user`).
    User,
}

/// A fact to remember: a triple.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddFact {
    /// Its layer.
    pub layer: LayerName,
    /// Your id of the user, for the `user` layer.
    pub user: Option<String>,
    /// The team id, for the `team` layer.
    pub team: Option<String>,
    /// The agent, for the `agent` layer.
    pub agent: Option<String>,
    /// Subject, e.g. `user`.
    pub subject: String,
    /// Predicate, e.g. `lives in`.
    pub predicate: String,
    /// Value, e.g. `Lisbon`.
    pub value: String,
    /// A locked fact is not replaced by learned ones.
    #[serde(default)]
    pub locked: bool,
}

/// What recording a fact did.
#[derive(Debug, Serialize, ToSchema)]
pub struct FactWritten {
    /// `added`, `superseded`, `duplicate` or `historical`.
    pub outcome: String,
    /// The fact.
    #[schema(value_type = Object)]
    pub fact: thinklio_core::Fact,
}

/// Records a fact in a layer of the key's account (reconciled with what
/// the layer holds).
#[utoipa::path(post, path = "/v1/facts", tag = "knowledge", request_body = AddFact,
    responses((status = 201, body = FactWritten), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn add_fact(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Json(body): Json<AddFact>,
) -> Result<(StatusCode, Json<FactWritten>), ApiError> {
    let missing = |what: &str| {
        ApiError::bad_request(
            "fact.missing_owner",
            format!("the {what} layer needs `{what}`"),
        )
    };
    let owner = match body.layer {
        LayerName::Account => FactOwner::Account,
        LayerName::Agent => FactOwner::Agent(AgentId::from(
            body.agent.as_deref().ok_or_else(|| missing("agent"))?,
        )),
        LayerName::Team => FactOwner::Team(parse_id::<TeamId>(
            "team",
            body.team.as_deref().ok_or_else(|| missing("team"))?,
        )?),
        LayerName::User => FactOwner::User(user_id(
            &caller,
            body.user.as_deref().ok_or_else(|| missing("user"))?,
        )?),
    };
    let mut fact = NewFact::new(
        caller.account(),
        owner,
        body.subject,
        body.predicate,
        body.value,
    );
    fact.locked = body.locked;
    // The key acts for the account as a whole.
    let by = thinklio_core::Principal::new(caller.account(), UserId::from_uuid(uuid::Uuid::nil()));
    let written = host.runtime.add_fact(&by, fact).await?;
    Ok((
        StatusCode::CREATED,
        Json(FactWritten {
            outcome: written.kind().to_owned(),
            fact: written.fact().clone(),
        }),
    ))
}

/// A search.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchQuery {
    /// Your id of the user whose view is searched.
    pub user: String,
    /// The question.
    pub q: String,
    /// How many facts at most (default 5).
    pub k: Option<usize>,
}

/// One fact found.
#[derive(Debug, Serialize, ToSchema)]
pub struct FactFound {
    /// The fact.
    #[schema(value_type = Object)]
    pub fact: thinklio_core::Fact,
    /// Its fused score (higher is better).
    pub score: f32,
}

/// Searches what the user may see through the account's agent (their
/// facts, their teams', the agent's and the account's), vector and keyword.
#[utoipa::path(get, path = "/v1/facts/search", tag = "knowledge", params(SearchQuery),
    responses((status = 200, body = [FactFound]), (status = 401, body = ErrorBody)))]
async fn search_facts(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Vec<FactFound>>, ApiError> {
    let channel_host = host.host(caller.account(), &host.config.agent);
    let principal = channel_host.principal(CHANNEL, &q.user).await?;
    let hits = host
        .runtime
        .search_facts(
            &principal,
            &AgentId::from(host.config.agent.as_str()),
            &q.q,
            q.k.unwrap_or(5).clamp(1, 100),
        )
        .await?;
    Ok(Json(
        hits.into_iter()
            .map(|h| FactFound {
                fact: h.fact,
                score: h.score,
            })
            .collect(),
    ))
}

/// Exports a user's own facts (current and past, with provenance).
#[utoipa::path(get, path = "/v1/users/{user}/facts", tag = "knowledge",
    params(("user" = String, Path, description = "Your id of the user")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)))]
async fn export_facts(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = user_id(&caller, &user)?;
    Ok(Json(
        host.runtime
            .export_user_facts(caller.account(), user)
            .await?,
    ))
}

/// How many facts were deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// The count.
    pub deleted: u64,
}

/// Deletes a user's facts (the privacy call; history keeps no content).
#[utoipa::path(delete, path = "/v1/users/{user}/facts", tag = "knowledge",
    params(("user" = String, Path, description = "Your id of the user")),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody)))]
async fn delete_facts(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let user = user_id(&caller, &user)?;
    let deleted = host
        .runtime
        .delete_user_facts(caller.account(), user)
        .await?;
    Ok(Json(Deleted { deleted }))
}

/// Whose usage.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageQuery {
    /// Your id of a user; the whole account when left out.
    pub user: Option<String>,
}

/// Spend this calendar month (UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// Start of the period (ms since the Unix epoch).
    pub since: i64,
    /// Model and capability calls.
    pub calls: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
}

/// Usage of the account, or of one user, this month.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, body = UsageView), (status = 401, body = ErrorBody)))]
async fn usage(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<UsageView>, ApiError> {
    let now = SystemClock.now();
    let since = BudgetPeriod::Monthly.start(now);
    let mut filter = UsageFilter::all()
        .account(caller.account())
        .between(since, now.plus(std::time::Duration::from_secs(1)));
    if let Some(user) = &q.user {
        filter = filter.user(user_id(&caller, user)?);
    }
    let totals = host.runtime.usage(&filter).await?;
    Ok(Json(UsageView {
        since: since.as_millis(),
        calls: totals.calls,
        input_tokens: totals.tokens.input_tokens,
        output_tokens: totals.tokens.output_tokens,
        cost_usd: totals.cost.as_usd(),
    }))
}

/// The account's API keys (never their secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = [ApiKey]), (status = 401, body = ErrorBody)))]
async fn list_keys(
    State(host): Host,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<ApiKey>>, ApiError> {
    Ok(Json(host.keys.list(caller.account()).await?))
}

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateKey {
    /// What it is for.
    pub label: String,
}

/// A new key: its secret is shown this once (and never in `Debug`).
#[derive(Serialize, ToSchema)]
pub struct NewKey {
    /// The key.
    pub key: ApiKey,
    /// The secret to send as `Authorization: Bearer`.
    pub secret: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("key", &self.key)
            .field("secret", &"***")
            .finish()
    }
}

/// Creates another key for the account.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = NewKey), (status = 401, body = ErrorBody)))]
async fn create_key(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    let (key, secret) = host.keys.create(caller.account(), &body.label).await?;
    Ok((StatusCode::CREATED, Json(NewKey { key, secret })))
}

/// Revokes a key of the account; it stops working at once.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if host.keys.revoke(caller.account(), &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "key.not_found",
            format!("the account has no live key {id}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_keys_secret_stays_out_of_debug() {
        let key = NewKey {
            key: ApiKey {
                id: "k1".into(),
                account: thinklio_core::AccountId::new(),
                label: "ci".into(),
                created_at: 0,
                revoked_at: None,
            },
            secret: "tk_0123456789abcdef".into(),
        };
        let shown = format!("{key:?}");
        assert!(!shown.contains("tk_0123456789abcdef"), "{shown}");
        assert!(shown.contains("***"));
    }
}
