//! Approvals: the calls waiting for a person's decision, and deciding them.

// The handlers share the imports and helpers (ids, ownership checks) of `api`.
use super::*;
use thinklio_core::StepId;
use thinklio_core::approval::{ApprovalMode, Decision};

/// The approval mode chosen for a session.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SessionMode {
    /// `observe`, `draft` or `autopilot`; `null` goes back to the agent's.
    /// The most careful of this, the agent's, its assignments' and the
    /// account's holds: a session cannot choose less care than its agent.
    #[schema(value_type = Option<String>)]
    pub mode: Option<ApprovalMode>,
}

/// Chooses the approval mode of a session (its user's key or an admin key).
#[utoipa::path(put, path = "/v1/sessions/{id}/approval_mode", tag = "approvals",
    params(("id" = String, Path, description = "The session")), request_body = SessionMode,
    responses((status = 200, body = SessionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn set_session_mode(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SessionMode>,
) -> Result<Json<SessionView>, ApiError> {
    let session = own_session(&host, &caller, &id).await?;
    let updated = host
        .runtime
        .approvals()
        .set_session_mode(caller.actor(), session.id, body.mode)
        .await?;
    Ok(Json(SessionView::from(&updated)))
}

/// Which waiting calls to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ApprovalsQuery {
    /// A session of the caller's account; without it, every waiting call
    /// of the account (an admin key's view).
    pub session: Option<String>,
}

/// Lists the calls waiting for a decision, oldest first: each with the
/// step id to decide, its capability and the arguments proposed.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalsQuery),
    responses((status = 200, body = Vec<Object>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_approvals(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ApprovalsQuery>,
) -> Result<Json<Value>, ApiError> {
    let pending = match q.session {
        Some(raw) => {
            let session = own_session(&host, &caller, &raw).await?;
            host.runtime
                .approvals()
                .of_session(caller.actor(), session.id)
                .await?
        }
        None => {
            caller.require(KeyScope::Admin)?;
            host.runtime
                .approvals()
                .of_account(caller.actor(), caller.account())
                .await?
        }
    };
    Ok(Json(json!(pending)))
}

/// A decision: `{"decision": "approve"}`, `{"decision": "reject",
/// "reason": "…"}` or `{"decision": "edit", "arguments": {…}}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Decide {
    /// What is decided.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub decision: Decision,
}

/// Decides about a waiting call, named by its step, then runs its
/// interaction on (the reply arrives on the session's stream and in its
/// history). Deciding the same way again answers the same decision;
/// deciding otherwise after it is `409 store.conflict`; edited arguments
/// that do not fit the capability are `400 approval.invalid_arguments`.
#[utoipa::path(post, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "The waiting step")), request_body = Decide,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn decide(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Decide>,
) -> Result<Json<Value>, ApiError> {
    let step: StepId = parse_id("step", &id)?;
    let decided = host
        .runtime
        .approvals()
        .decide(caller.actor(), step, body.decision, CHANNEL)
        .await
        .map_err(|e| match e {
            thinklio_core::RuntimeError::Store(thinklio_core::StoreError::NotFound { .. }) => {
                ApiError::not_found("approval.not_found", format!("no step {step}"))
            }
            thinklio_core::RuntimeError::Forbidden(_) => ApiError::wrong_account("approval"),
            other => other.into(),
        })?;
    Ok(Json(json!(decided)))
}
