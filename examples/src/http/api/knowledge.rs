//! Knowledge: facts added, searched, exported and deleted.

// The handlers share the imports and helpers (ids, ownership checks) of `api`.
use super::*;

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
    /// Whether the predicate holds one value at a time (`single`: a new
    /// value supersedes the old) or many (`many`: values accumulate).
    /// Omitted: the account's declaration, else the built-in lists, else many.
    #[serde(default)]
    pub cardinality: Option<CardinalityName>,
    /// The id of a current fact of the same layer and owner this one
    /// replaces (an update): only that fact is superseded.
    #[serde(default)]
    pub replaces: Option<String>,
}

/// How many values a predicate holds at once.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CardinalityName {
    /// One value at a time.
    Single,
    /// Values accumulate.
    Many,
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
    responses((status = 201, body = FactWritten), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "`replaces` names no current fact of that owner", body = ErrorBody)))]
pub(super) async fn add_fact(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<AddFact>,
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
    fact.cardinality = body.cardinality.map(|c| match c {
        CardinalityName::Single => thinklio_core::knowledge::Cardinality::Single,
        CardinalityName::Many => thinklio_core::knowledge::Cardinality::Many,
    });
    fact.replaces = body
        .replaces
        .as_deref()
        .map(|id| parse_id::<thinklio_core::FactId>("replaces", id))
        .transpose()?;
    // The key acts for the account as a whole.
    let written = host.runtime.knowledge().add(caller.actor(), fact).await?;
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
pub(super) async fn search_facts(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Json<Vec<FactFound>>, ApiError> {
    let channel_host = host.host(caller.account());
    let principal = channel_host.principal(CHANNEL, &q.user).await?;
    let hits = host
        .runtime
        .knowledge()
        .search(
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

/// Exports a user's own facts, current and past, with provenance (admin keys).
#[utoipa::path(get, path = "/v1/users/{user}/facts", tag = "knowledge",
    params(("user" = String, Path, description = "Your id of the user")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn export_facts(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let user = user_id(&caller, &user)?;
    Ok(Json(
        host.runtime
            .knowledge()
            .export_user(caller.actor(), caller.account(), user)
            .await?,
    ))
}

/// How many facts were deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// The count.
    pub deleted: u64,
}

/// Deletes a user's facts; the history keeps no content (admin keys).
#[utoipa::path(delete, path = "/v1/users/{user}/facts", tag = "knowledge",
    params(("user" = String, Path, description = "Your id of the user")),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn delete_facts(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let user = user_id(&caller, &user)?;
    let deleted = host
        .runtime
        .knowledge()
        .delete_user(caller.actor(), caller.account(), user)
        .await?;
    Ok(Json(Deleted { deleted }))
}
