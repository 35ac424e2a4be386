//! Agent templates of the account (listing, creating, reading, changing,
//! deleting), making agents from them, keeping those agents in step, and
//! cloning an agent. Chat keys read; changes need an admin key.

// The handlers share the imports and helpers (ids, ownership checks) of `api`.
use super::agents::{AgentView, definition, write_error};
use super::*;
use thinklio_core::{
    AgentOverrides, AgentTemplate, CloneOptions, Instantiation, RuntimeError, Scope, SyncReport,
    TemplateId, TemplateSpec,
};

/// An agent template.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    /// Its id.
    pub id: String,
    /// Its version, from 1.
    pub version: u32,
    /// What it is for.
    pub description: String,
    /// The definition its agents start from.
    #[schema(value_type = Object)]
    pub definition: Value,
    /// Seed facts every agent made from it starts with.
    pub knowledge: Vec<String>,
    /// When it was first stored (ms since the Unix epoch).
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

impl From<&AgentTemplate> for TemplateView {
    fn from(t: &AgentTemplate) -> Self {
        Self {
            id: t.id.to_string(),
            version: t.version,
            description: t.spec.description.clone(),
            definition: serde_json::to_value(&t.spec.definition).unwrap_or_default(),
            knowledge: t.spec.knowledge.clone(),
            created_at: t.created_at.as_millis(),
            updated_at: t.updated_at.as_millis(),
        }
    }
}

/// An agent a template change could not reach.
#[derive(Debug, Serialize, ToSchema)]
pub struct Refused {
    /// The agent.
    pub agent: String,
    /// Why.
    pub reason: String,
}

/// What a template change did to the agents made from it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncView {
    /// The template's version.
    pub version: u32,
    /// Agents that follow it, now at that version.
    pub updated: Vec<String>,
    /// Agents edited since they were made: left as they are.
    pub diverged: Vec<String>,
    /// Agents the change could not be written to.
    pub refused: Vec<Refused>,
}

impl From<&SyncReport> for SyncView {
    fn from(r: &SyncReport) -> Self {
        let names = |v: &[AgentId]| v.iter().map(ToString::to_string).collect();
        Self {
            version: r.version,
            updated: names(&r.updated),
            diverged: names(&r.diverged),
            refused: r
                .refused
                .iter()
                .map(|(a, why)| Refused {
                    agent: a.to_string(),
                    reason: why.clone(),
                })
                .collect(),
        }
    }
}

/// A template written, and what that did to its agents.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateWritten {
    /// The template.
    pub template: TemplateView,
    /// Its agents.
    pub sync: SyncView,
}

/// A new template.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// Its id (1 to 128 characters).
    pub id: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The definition its agents start from (its `id` may be left out).
    #[schema(value_type = Object)]
    pub definition: Value,
    /// Seed facts (free text) for its agents' agent layer.
    #[serde(default)]
    pub knowledge: Vec<String>,
}

/// A change of a template: the version it changes and all it holds.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTemplate {
    /// The version read before the change.
    pub version: u32,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The definition its agents start from.
    #[schema(value_type = Object)]
    pub definition: Value,
    /// Seed facts.
    #[serde(default)]
    pub knowledge: Vec<String>,
}

/// Where an agent is made available.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum ScopeBody {
    /// Every user of the account.
    Account,
    /// One team of the account (its id).
    Team(String),
    /// One user of the account (their name on this API).
    User(String),
}

/// An agent to make from a template.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Instantiate {
    /// The new agent's id.
    pub agent: String,
    /// Where to make it available; nowhere when left out.
    pub scope: Option<ScopeBody>,
    /// What it changes of the template: `model`, `system_prompt`,
    /// `capabilities`, `temperature`, `max_output_tokens`,
    /// `approval_mode`, `trust_level`.
    #[schema(value_type = Option<Object>)]
    pub overrides: Option<Value>,
}

/// A clone to make of an agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneAgent {
    /// The clone's id.
    pub id: String,
    /// Copy the agent's agent-layer facts.
    #[serde(default)]
    pub knowledge: bool,
    /// Carry each of its conversations over, from their latest summary.
    #[serde(default)]
    pub summaries: bool,
}

/// A clone made.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClonedView {
    /// The clone (its parent in `origin`).
    pub agent: AgentView,
    /// Facts copied.
    pub facts: usize,
    /// Conversations carried over.
    pub summaries: usize,
}

fn spec_of(
    id: &str,
    description: String,
    raw: Value,
    knowledge: Vec<String>,
) -> Result<TemplateSpec, ApiError> {
    let mut spec = TemplateSpec::new(definition(raw, Some(id))?).description(description);
    for fact in knowledge {
        spec = spec.knows(fact);
    }
    Ok(spec)
}

fn template_error(e: RuntimeError) -> ApiError {
    match e {
        RuntimeError::Config(m) => ApiError::bad_request("request.bad_template", m),
        other => write_error(other),
    }
}

/// Lists the account's templates, by id.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = [TemplateView]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_templates(
    State(host): Host,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<TemplateView>>, ApiError> {
    let templates = host.runtime.templates().list(caller.actor()).await?;
    Ok(Json(templates.iter().map(TemplateView::from).collect()))
}

/// Creates a template of the account (an admin key): version 1.
#[utoipa::path(post, path = "/v1/templates", tag = "templates", request_body = CreateTemplate,
    responses((status = 201, body = TemplateWritten), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "A chat key, another account's template, or beyond the account's policy"),
        (status = 409, body = ErrorBody, description = "The template exists")))]
pub(super) async fn create_template(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateTemplate>,
) -> Result<(StatusCode, Json<TemplateWritten>), ApiError> {
    caller.require(KeyScope::Admin)?;
    let spec = spec_of(&body.id, body.description, body.definition, body.knowledge)?;
    let (template, sync) = host
        .runtime
        .templates()
        .update(caller.actor(), body.id.as_str(), spec, 0)
        .await
        .map_err(template_error)?;
    Ok((
        StatusCode::CREATED,
        Json(TemplateWritten {
            template: TemplateView::from(&template),
            sync: SyncView::from(&sync),
        }),
    ))
}

/// Reads a template of the account.
#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = String, Path, description = "The template")),
    responses((status = 200, body = TemplateView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn read_template(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TemplateView>, ApiError> {
    let template = host
        .runtime
        .templates()
        .get(caller.actor(), &TemplateId::new(id))
        .await?;
    Ok(Json(TemplateView::from(&template)))
}

/// Changes a template (an admin key), then brings the agents made from it
/// that nobody edited up to the new version; says which followed and which
/// had diverged.
#[utoipa::path(put, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = String, Path, description = "The template")), request_body = UpdateTemplate,
    responses((status = 200, body = TemplateWritten), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Changed since `version`")))]
pub(super) async fn update_template(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateTemplate>,
) -> Result<Json<TemplateWritten>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let templates = host.runtime.templates();
    // Only a template of the account is changed here (creating is POST).
    templates
        .get(caller.actor(), &TemplateId::new(id.clone()))
        .await?;
    let spec = spec_of(&id, body.description, body.definition, body.knowledge)?;
    let (template, sync) = templates
        .update(caller.actor(), id.as_str(), spec, body.version)
        .await
        .map_err(template_error)?;
    Ok(Json(TemplateWritten {
        template: TemplateView::from(&template),
        sync: SyncView::from(&sync),
    }))
}

/// Deletes a template (an admin key); the agents made from it stay.
#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = String, Path, description = "The template")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_template(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(KeyScope::Admin)?;
    host.runtime
        .templates()
        .delete(caller.actor(), &TemplateId::new(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes an agent from a template (an admin key): the template's
/// definition with the overrides, its seed knowledge, and an assignment at
/// the scope given.
#[utoipa::path(post, path = "/v1/templates/{id}/instantiate", tag = "templates",
    params(("id" = String, Path, description = "The template")), request_body = Instantiate,
    responses((status = 201, body = AgentView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "A chat key, another account's template or scope, or beyond the account's policy"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The agent exists")))]
pub(super) async fn instantiate_template(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Instantiate>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    caller.require(KeyScope::Admin)?;
    let overrides: AgentOverrides = match body.overrides {
        Some(raw) => serde_json::from_value(raw).map_err(|e| {
            ApiError::bad_request("request.bad_overrides", format!("not overrides: {e}"))
        })?,
        None => AgentOverrides::none(),
    };
    let mut how = Instantiation::new(body.agent).with(overrides);
    match body.scope {
        None => {}
        Some(ScopeBody::Account) => how = how.at(Scope::Account(caller.account())),
        Some(ScopeBody::Team(team)) => {
            how = how.at(Scope::Team(parse_id::<TeamId>("team", &team)?))
        }
        Some(ScopeBody::User(user)) => how = how.at(Scope::User(user_id(&caller, &user)?)),
    }
    let agent = host
        .runtime
        .templates()
        .instantiate(caller.actor(), &TemplateId::new(id), how)
        .await
        .map_err(write_error)?;
    Ok((StatusCode::CREATED, Json(AgentView::from(&agent))))
}

/// Brings the agents made from a template up to its version (an admin
/// key), and says which followed, which had diverged and which could not;
/// safe to repeat.
#[utoipa::path(post, path = "/v1/templates/{id}/sync", tag = "templates",
    params(("id" = String, Path, description = "The template")),
    responses((status = 200, body = SyncView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn sync_template(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SyncView>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let report = host
        .runtime
        .templates()
        .sync(caller.actor(), &TemplateId::new(id))
        .await?;
    Ok(Json(SyncView::from(&report)))
}

/// Clones an agent of the account, or one registered in code (an admin
/// key): its definition, with the parent recorded, and as asked its
/// agent-layer facts and its conversations from their latest summaries.
#[utoipa::path(post, path = "/v1/agents/{id}/clone", tag = "agents",
    params(("id" = String, Path, description = "The agent to clone")), request_body = CloneAgent,
    responses((status = 201, body = ClonedView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The clone's id is taken")))]
pub(super) async fn clone_agent(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CloneAgent>,
) -> Result<(StatusCode, Json<ClonedView>), ApiError> {
    caller.require(KeyScope::Admin)?;
    let mut options = CloneOptions::definition_only();
    options.knowledge = body.knowledge;
    options.summaries = body.summaries;
    let cloned = host
        .runtime
        .directory()
        .clone_agent(caller.actor(), &AgentId::new(id), body.id, options)
        .await
        .map_err(write_error)?;
    Ok((
        StatusCode::CREATED,
        Json(ClonedView {
            agent: AgentView::from(&cloned.agent),
            facts: cloned.facts,
            summaries: cloned.summaries,
        }),
    ))
}
