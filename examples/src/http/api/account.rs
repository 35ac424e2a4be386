//! The account's usage and its API keys.

// The handlers share the imports and helpers (ids, ownership checks) of `api`.
use super::*;

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

/// Usage of the account, or of one user, this month (admin keys).
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, body = UsageView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn usage(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageView>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let user = q.user.as_deref().map(|u| user_id(&caller, u)).transpose()?;
    let (since, totals) = crate::usage_this_month(&host.runtime, caller.account(), user).await?;
    Ok(Json(UsageView {
        since: since.as_millis(),
        calls: totals.calls,
        input_tokens: totals.tokens.input_tokens,
        output_tokens: totals.tokens.output_tokens,
        cost_usd: totals.cost.as_usd(),
    }))
}

/// One agent's spend this calendar month (UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentUsageView {
    /// The agent.
    pub agent: String,
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

/// The account's usage this month, one row per agent that was used (admin
/// keys); a delegate's calls count as the delegate's.
#[utoipa::path(get, path = "/v1/usage/agents", tag = "usage",
    responses((status = 200, body = [AgentUsageView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn usage_by_agent(
    State(host): Host,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<AgentUsageView>>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let (since, rows) = crate::usage_by_agent_this_month(&host.runtime, caller.account()).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| AgentUsageView {
                agent: row.key,
                since: since.as_millis(),
                calls: row.totals.calls,
                input_tokens: row.totals.tokens.input_tokens,
                output_tokens: row.totals.tokens.output_tokens,
                cost_usd: row.totals.cost.as_usd(),
            })
            .collect(),
    ))
}

/// The account's API keys, never their secrets (admin keys).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = [ApiKey]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list_keys(
    State(host): Host,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<ApiKey>>, ApiError> {
    caller.require(KeyScope::Admin)?;
    Ok(Json(host.keys.list(caller.account()).await?))
}

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateKey {
    /// What it is for.
    pub label: String,
    /// What it may do: `chat` (the default) or `admin`.
    #[serde(default = "chat")]
    pub scope: KeyScope,
}

fn chat() -> KeyScope {
    KeyScope::Chat
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

/// Creates another key for the account (admin keys; an account has at
/// most a configured number of live keys).
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = NewKey), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn create_key(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    caller.require(KeyScope::Admin)?;
    let live = host
        .keys
        .list(caller.account())
        .await?
        .iter()
        .filter(|k| k.revoked_at.is_none())
        .count();
    if live >= host.config.max_keys_per_account {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "key.too_many",
            format!("the account has {live} live keys, the most it may have; revoke one first"),
        ));
    }
    let (key, secret) = host
        .keys
        .create(caller.account(), body.scope, &body.label)
        .await?;
    Ok((StatusCode::CREATED, Json(NewKey { key, secret })))
}

/// Revokes a key of the account; it stops working at once (admin keys).
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_key(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(KeyScope::Admin)?;
    if host.keys.revoke(caller.account(), &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "key.not_found",
            format!("the account has no live key {id}"),
        ))
    }
}

/// What forgetting a user deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Forgotten {
    /// Conversations.
    pub sessions: u64,
    /// Messages answered, with their steps, replies and events.
    pub interactions: u64,
    /// Jobs, with their subjobs and notices.
    pub jobs: u64,
    /// Background tasks about the user.
    pub tasks: u64,
    /// Knowledge facts of the user.
    pub facts: u64,
    /// Todo items.
    pub todos: u64,
    /// Memberships of the account, its teams, and user assignments.
    pub memberships: u64,
    /// Usage records kept for the account's totals, no longer the user's.
    pub usage_anonymized: u64,
}

/// Forgets a user: deletes everything the runtime holds of them, in one
/// transaction (admin keys). Their next message starts from nothing.
#[utoipa::path(delete, path = "/v1/users/{user}", tag = "users",
    params(("user" = String, Path, description = "Your id of the user")),
    responses((status = 200, body = Forgotten), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn forget_user(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<Forgotten>, ApiError> {
    caller.require(KeyScope::Admin)?;
    user_id(&caller, &user)?;
    let r = host.host(caller.account()).forget(CHANNEL, &user).await?;
    Ok(Json(Forgotten {
        sessions: r.sessions,
        interactions: r.interactions,
        jobs: r.jobs,
        tasks: r.tasks,
        facts: r.facts,
        todos: r.todos,
        memberships: r.memberships,
        usage_anonymized: r.usage_anonymized,
    }))
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
                scope: KeyScope::Chat,
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
