//! `AgentStore` on PostgreSQL: agents kept as data, every change a version.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use thinklio_core::{
    AccountId, AgentId, AgentState, AgentStore, AgentVersion, NewAgentVersion, StoreError,
    StoreResult, StoredAgent,
};

use crate::PostgresStore;
use crate::rows::{self, AGENT_COLUMNS, AGENT_VERSION_COLUMNS, backend, execute, query, query_opt};

/// The agent `id` as stored, read (and, with `lock`, locked) in `tx`.
async fn read(tx: &Transaction<'_>, id: &str, lock: bool) -> StoreResult<Option<StoredAgent>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    query_opt(
        tx,
        &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1{lock}"),
        &[&id],
    )
    .await?
    .map(|r| rows::stored_agent(&r))
    .transpose()
}

#[async_trait]
impl AgentStore for PostgresStore {
    async fn put_agent(&self, new: NewAgentVersion) -> StoreResult<StoredAgent> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let id = new.definition.id.as_str().to_owned();
        let account = new.account.to_string();
        // The ownership row first: it serialises two first writes of one
        // agent, and one the directory knows belongs to its account.
        execute(
            &tx,
            "INSERT INTO agent_owners (agent_id, account_id) VALUES ($1, $2) ON CONFLICT (agent_id) DO NOTHING",
            &[&id, &account],
        )
        .await
        .map_err(|e| crate::directory::missing_account(e, new.account))?;
        let owner: String = query_opt(
            &tx,
            "SELECT account_id FROM agent_owners WHERE agent_id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .map(|r| rows::get(&r, "account_id"))
        .transpose()?
        .unwrap_or_default();
        if owner != account {
            return Err(StoreError::Conflict(format!(
                "agent `{id}` belongs to another account"
            )));
        }
        let current = read(&tx, &id, true).await?;
        let version =
            new.next_version(current.as_ref().map(|a| (a.account, a.version, a.state)))?;
        let definition = new.definition_json();
        let created = current.as_ref().map_or(now, |a| a.created_at);
        execute(
            &tx,
            "INSERT INTO agents (id, account_id, version, state, definition, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
             definition = excluded.definition, updated_at = excluded.updated_at",
            &[
                &id,
                &account,
                &i64::from(version),
                &AgentState::Active.as_str(),
                &definition,
                &created.as_millis(),
                &now.as_millis(),
            ],
        )
        .await?;
        execute(
            &tx,
            "INSERT INTO agent_versions (agent_id, version, definition, by_user, at) VALUES ($1, $2, $3, $4, $5)",
            &[
                &id,
                &i64::from(version),
                &definition,
                &new.by.map(|u| u.to_string()),
                &now.as_millis(),
            ],
        )
        .await?;
        let stored = read(&tx, &id, false)
            .await?
            .ok_or_else(|| StoreError::Conflict("the agent could not be stored".into()))?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    async fn stored_agent(&self, id: &AgentId) -> StoreResult<Option<StoredAgent>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        read(&tx, id.as_str(), false).await
    }

    async fn agent_versions(&self, id: &AgentId) -> StoreResult<Vec<AgentVersion>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        query(
            &tx,
            &format!(
                "SELECT {AGENT_VERSION_COLUMNS} FROM agent_versions WHERE agent_id = $1 ORDER BY version"
            ),
            &[&id.as_str()],
        )
        .await?
        .iter()
        .map(rows::agent_version)
        .collect()
    }

    async fn agent_version(&self, id: &AgentId, version: u32) -> StoreResult<AgentVersion> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let row = query_opt(
            &tx,
            &format!(
                "SELECT {AGENT_VERSION_COLUMNS} FROM agent_versions WHERE agent_id = $1 AND version = $2"
            ),
            &[&id.as_str(), &i64::from(version)],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("agent version", format!("{id}@{version}")))?;
        rows::agent_version(&row)
    }

    async fn set_agent_state(&self, id: &AgentId, state: AgentState) -> StoreResult<StoredAgent> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let current = read(&tx, id.as_str(), true)
            .await?
            .ok_or_else(|| StoreError::not_found("agent", id))?;
        if current.state == AgentState::Archived && state != AgentState::Archived {
            return Err(StoreError::Conflict(format!(
                "agent `{id}` is archived and stays archived"
            )));
        }
        execute(
            &tx,
            "UPDATE agents SET state = $2, updated_at = $3 WHERE id = $1",
            &[&id.as_str(), &state.as_str(), &now.as_millis()],
        )
        .await?;
        let stored = read(&tx, id.as_str(), false)
            .await?
            .ok_or_else(|| StoreError::not_found("agent", id))?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    async fn stored_agents(&self, account: AccountId) -> StoreResult<Vec<StoredAgent>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        query(
            &tx,
            &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE account_id = $1 ORDER BY id"),
            &[&account.to_string()],
        )
        .await?
        .iter()
        .map(rows::stored_agent)
        .collect()
    }
}
