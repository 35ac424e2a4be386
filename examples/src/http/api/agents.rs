//! Agents as data: listing, creating, reading, changing, pausing, resuming
//! and archiving the account's stored agents, and their versions. Chat keys
//! read; changes need an admin key.

// The handlers share the imports and helpers (ids, ownership checks) of `api`.
use super::*;
use thinklio_core::{AgentDefinition, AgentState, AgentVersion, RuntimeError, StoredAgent};

/// A stored agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    /// Its id.
    pub id: String,
    /// Its current version, from 1 (each change adds one).
    pub version: u32,
    /// `active`, `paused` (refuses new messages) or `archived` (no new work).
    pub state: String,
    /// Its definition: model, system prompt, capabilities, limits, approval
    /// mode (as `POST /v1/agents` takes it).
    #[schema(value_type = Object)]
    pub definition: Value,
    /// When it was first stored (ms since the Unix epoch).
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
    /// Where it came from: `{"kind": "template", "template", "overrides"}`
    /// or `{"kind": "clone", "parent", "parent_version"}`; none when made
    /// directly.
    #[schema(value_type = Option<Object>)]
    pub origin: Option<Value>,
    /// The template version its current version follows; none once edited
    /// (it no longer follows its template) or without a template.
    pub template_version: Option<u32>,
}

impl From<&StoredAgent> for AgentView {
    fn from(a: &StoredAgent) -> Self {
        Self {
            id: a.id().to_string(),
            version: a.version,
            state: a.state.as_str().to_owned(),
            definition: serde_json::to_value(&a.definition).unwrap_or_default(),
            created_at: a.created_at.as_millis(),
            updated_at: a.updated_at.as_millis(),
            origin: a.origin.as_ref().and_then(|o| serde_json::to_value(o).ok()),
            template_version: a.template_version,
        }
    }
}

/// One version of an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentVersionView {
    /// The version.
    pub version: u32,
    /// The definition it had.
    #[schema(value_type = Object)]
    pub definition: Value,
    /// The user who wrote it (none: an admin key).
    pub by: Option<String>,
    /// When (ms since the Unix epoch).
    pub at: i64,
}

impl From<&AgentVersion> for AgentVersionView {
    fn from(v: &AgentVersion) -> Self {
        Self {
            version: v.version,
            definition: serde_json::to_value(&v.definition).unwrap_or_default(),
            by: v.by.map(|u| u.to_string()),
            at: v.at.as_millis(),
        }
    }
}

/// A change of an agent: the version it changes (the write is refused
/// with `409 store.conflict` if the agent has moved on since) and its whole
/// new definition.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateAgent {
    /// The version read before the change.
    pub version: u32,
    /// The new definition (its `id` may be left out).
    #[schema(value_type = Object)]
    pub definition: Value,
}

/// A definition read from a request: `400 request.bad_agent` when it is not
/// one (its `id`, when given, must be `id`).
pub(super) fn definition(mut raw: Value, id: Option<&str>) -> Result<AgentDefinition, ApiError> {
    if let (Some(id), Some(object)) = (id, raw.as_object_mut()) {
        match object.get("id") {
            None => {
                object.insert("id".into(), json!(id));
            }
            Some(given) if given != id => {
                return Err(ApiError::bad_request(
                    "request.bad_agent",
                    "the definition's `id` is not the agent's",
                ));
            }
            Some(_) => {}
        }
    }
    serde_json::from_value(raw).map_err(|e| {
        ApiError::bad_request("request.bad_agent", format!("not an agent definition: {e}"))
    })
}

/// Errors of agent writes: a definition out of bounds is the request's
/// fault (`400`), a delegation cycle a conflict (`409`, naming it).
pub(super) fn write_error(e: RuntimeError) -> ApiError {
    match e {
        RuntimeError::Config(m) => ApiError::bad_request("request.bad_agent", m),
        RuntimeError::DelegationCycle(cycle) => ApiError::new(
            StatusCode::CONFLICT,
            "delegation.cycle",
            format!("the agents would delegate in a circle: {cycle}"),
        ),
        other => other.into(),
    }
}

/// Lists the account's stored agents, by id.
#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    responses((status = 200, body = [AgentView]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_agents(
    State(host): Host,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    let agents = host.runtime.directory().agents(caller.actor()).await?;
    Ok(Json(agents.iter().map(AgentView::from).collect()))
}

/// Creates an agent of the account (an admin key): version 1, active. An
/// agent without an `approval_mode` asks before every call that is not
/// read-only (`draft`).
#[utoipa::path(post, path = "/v1/agents", tag = "agents",
    request_body(content = Object, description = "An agent definition: `id`, `model`, and optionally `system_prompt`, `capabilities`, `trust_level`, `approval_mode`, limits and model parameters"),
    responses((status = 201, body = AgentView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "A chat key, another account's agent, an agent registered in code, or beyond the account's policy"),
        (status = 409, body = ErrorBody, description = "The agent exists, or would delegate in a circle")))]
pub(super) async fn create_agent(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    caller.require(KeyScope::Admin)?;
    let agent = definition(body, None)?;
    let stored = host
        .runtime
        .directory()
        .update_agent(caller.actor(), agent, 0)
        .await
        .map_err(write_error)?;
    Ok((StatusCode::CREATED, Json(AgentView::from(&stored))))
}

/// Reads a stored agent of the account.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "The agent")),
    responses((status = 200, body = AgentView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn read_agent(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = host
        .runtime
        .directory()
        .agent(caller.actor(), &AgentId::new(id))
        .await?;
    Ok(Json(AgentView::from(&agent)))
}

/// Changes a stored agent of the account (an admin key): its next version.
#[utoipa::path(put, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "The agent")), request_body = UpdateAgent,
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Changed since `version`, archived, or a delegation circle")))]
pub(super) async fn update_agent(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> Result<Json<AgentView>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let directory = host.runtime.directory();
    // Only an agent of the account is changed here (creating is POST).
    directory
        .agent(caller.actor(), &AgentId::new(id.clone()))
        .await?;
    let agent = definition(body.definition, Some(&id))?;
    let stored = directory
        .update_agent(caller.actor(), agent, body.version)
        .await
        .map_err(write_error)?;
    Ok(Json(AgentView::from(&stored)))
}

async fn set_state(
    host: &HttpHost,
    caller: &Caller,
    id: String,
    state: AgentState,
) -> Result<Json<AgentView>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let stored = host
        .runtime
        .directory()
        .set_agent_state(caller.actor(), &AgentId::new(id), state)
        .await?;
    Ok(Json(AgentView::from(&stored)))
}

/// Pauses an agent (an admin key): new messages are refused with
/// `409 agent.paused` until it is resumed; what it started goes on.
#[utoipa::path(post, path = "/v1/agents/{id}/pause", tag = "agents",
    params(("id" = String, Path, description = "The agent")),
    responses((status = 200, body = AgentView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Archived")))]
pub(super) async fn pause_agent(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    set_state(&host, &caller, id, AgentState::Paused).await
}

/// Resumes a paused agent (an admin key).
#[utoipa::path(post, path = "/v1/agents/{id}/resume", tag = "agents",
    params(("id" = String, Path, description = "The agent")),
    responses((status = 200, body = AgentView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Archived")))]
pub(super) async fn resume_agent(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    set_state(&host, &caller, id, AgentState::Active).await
}

/// Archives an agent for good (an admin key): no new work; its sessions
/// and history stay.
#[utoipa::path(post, path = "/v1/agents/{id}/archive", tag = "agents",
    params(("id" = String, Path, description = "The agent")),
    responses((status = 200, body = AgentView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn archive_agent(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    set_state(&host, &caller, id, AgentState::Archived).await
}

/// Every version of a stored agent, oldest first.
#[utoipa::path(get, path = "/v1/agents/{id}/versions", tag = "agents",
    params(("id" = String, Path, description = "The agent")),
    responses((status = 200, body = [AgentVersionView]), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn agent_versions(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<AgentVersionView>>, ApiError> {
    let versions = host
        .runtime
        .directory()
        .agent_versions(caller.actor(), &AgentId::new(id))
        .await?;
    Ok(Json(versions.iter().map(AgentVersionView::from).collect()))
}

/// How to draw a delegation graph.
#[derive(Debug, Deserialize, IntoParams)]
pub struct GraphQuery {
    /// `json` (the default), `mermaid` or `dot`.
    pub format: Option<String>,
}

/// The delegation graph from an agent: the agents it may call, through
/// which capability, and theirs in turn (each with its depth limit; edges
/// on a cycle are drawn red in Mermaid and DOT).
#[utoipa::path(get, path = "/v1/agents/{id}/graph", tag = "agents",
    params(("id" = String, Path, description = "The agent"), GraphQuery),
    responses((status = 200, description = "JSON `{agents: [{id, max_delegation_depth}], edges: [{from, capability, to}], cycles}`, or Mermaid or DOT text"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn agent_graph(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GraphQuery>,
) -> Result<Response, ApiError> {
    let format = q.format.unwrap_or_else(|| "json".to_owned());
    if !matches!(format.as_str(), "json" | "mermaid" | "dot") {
        return Err(ApiError::bad_request(
            "request.bad_query",
            "`format` is json, mermaid or dot",
        ));
    }
    let graph = host
        .runtime
        .directory()
        .agent_graph(caller.actor(), &AgentId::new(id))
        .await?;
    let text =
        |body: String, kind: &'static str| ([(header::CONTENT_TYPE, kind)], body).into_response();
    Ok(match format.as_str() {
        "mermaid" => text(graph.to_mermaid(), "text/vnd.mermaid; charset=utf-8"),
        "dot" => text(graph.to_dot(), "text/vnd.graphviz; charset=utf-8"),
        _ => Json(json!({
            "agents": graph.agents.iter().map(|(a, d)| json!({ "id": a, "max_delegation_depth": d })).collect::<Vec<_>>(),
            "edges": graph.edges.iter().map(|(f, c, t)| json!({ "from": f, "capability": c, "to": t })).collect::<Vec<_>>(),
            "cycles": graph.cycles(),
        }))
        .into_response(),
    })
}
