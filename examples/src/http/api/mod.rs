//! The `/v1/` routes and their OpenAPI description.

use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thinklio_core::channel::AccountMembers;
use thinklio_core::{
    AgentId, FactOwner, ImageInput, Inbound, InteractionId, JobId, JobReport, NewFact, Reply,
    Session, SessionId, TeamId, UserId,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::keys::{ApiKey, KeyScope};
use super::{CHANNEL, Caller, HttpHost, JOBS_CHAT, stream};

mod account;
mod agents;
mod approvals;
mod jobs;
mod knowledge;
mod sessions;
mod templates;

pub use account::{CreateKey, Forgotten, NewKey};
pub use agents::{AgentVersionView, AgentView, GraphQuery, UpdateAgent};
pub use approvals::{ApprovalsQuery, Decide, SessionMode};
pub use jobs::{CancelJob, DispatchJob, JobView};
pub use knowledge::{AddFact, Deleted, FactFound, FactWritten, LayerName, SearchQuery};
pub use sessions::{
    CreateSession, ImageBody, ReplyView, SendMessage, SendMessageForm, SessionView, StreamQuery,
    TurnView, UserQuery,
};
pub use templates::{
    CloneAgent, ClonedView, CreateTemplate, Instantiate, Refused, ScopeBody, SyncView,
    TemplateView, TemplateWritten, UpdateTemplate,
};

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

/// The routes that need an API key; a message's body (which may carry
/// images) may have up to `message_body_bytes`.
pub fn keyed_routes(message_body_bytes: usize) -> OpenApiRouter<Arc<HttpHost>> {
    OpenApiRouter::new()
        .routes(routes!(sessions::send_message, sessions::history))
        .layer(axum::extract::DefaultBodyLimit::max(message_body_bytes))
        .routes(routes!(sessions::create_session, sessions::list_sessions))
        .routes(routes!(sessions::session_stream))
        .routes(routes!(sessions::interaction_steps))
        .routes(routes!(sessions::cancel_interaction))
        .routes(routes!(approvals::list_approvals))
        .routes(routes!(approvals::decide))
        .routes(routes!(approvals::set_session_mode))
        .routes(routes!(jobs::dispatch_job))
        .routes(routes!(jobs::job_status))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(knowledge::add_fact))
        .routes(routes!(knowledge::search_facts))
        .routes(routes!(knowledge::export_facts, knowledge::delete_facts))
        .routes(routes!(account::usage))
        .routes(routes!(account::usage_by_agent))
        .routes(routes!(account::list_keys, account::create_key))
        .routes(routes!(account::revoke_key))
        .routes(routes!(account::forget_user))
        .routes(routes!(agents::list_agents, agents::create_agent))
        .routes(routes!(agents::read_agent, agents::update_agent))
        .routes(routes!(agents::pause_agent))
        .routes(routes!(agents::resume_agent))
        .routes(routes!(agents::archive_agent))
        .routes(routes!(agents::agent_versions))
        .routes(routes!(agents::agent_graph))
        .routes(routes!(templates::clone_agent))
        .routes(routes!(
            templates::list_templates,
            templates::create_template
        ))
        .routes(routes!(
            templates::read_template,
            templates::update_template,
            templates::delete_template
        ))
        .routes(routes!(templates::instantiate_template))
        .routes(routes!(templates::sync_template))
}

/// The job callback: authorised by the job's own token, not an API key.
pub fn callback_routes() -> OpenApiRouter<Arc<HttpHost>> {
    OpenApiRouter::new().routes(routes!(jobs::report_job))
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
        .sessions()
        .get(caller.actor(), id)
        .await
        .map_err(|e| match e {
            thinklio_core::RuntimeError::Store(thinklio_core::StoreError::NotFound { .. }) => {
                ApiError::not_found("session.not_found", format!("no session {id}"))
            }
            thinklio_core::RuntimeError::Forbidden(_) => ApiError::wrong_account("session"),
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
