//! `AgentStore` on SQLite: agents kept as data, every change a version.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use thinklio_core::{
    AccountId, AgentId, AgentState, AgentStore, AgentVersion, NewAgentVersion, StoreError,
    StoreResult, StoredAgent,
};

use crate::SqliteStore;
use crate::rows::{self, AGENT_COLUMNS, AGENT_VERSION_COLUMNS, backend};

/// The agent `id` as stored, read in a transaction.
fn read(c: &rusqlite::Connection, id: &str) -> StoreResult<Option<StoredAgent>> {
    c.prepare_cached(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"))
        .map_err(backend)?
        .query_row([id], rows::stored_agent)
        .optional()
        .map_err(backend)
}

#[async_trait]
impl AgentStore for SqliteStore {
    async fn put_agent(&self, new: NewAgentVersion) -> StoreResult<StoredAgent> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let id = new.definition.id.as_str().to_owned();
                let current = read(&tx, &id)?;
                // The owner recorded for the agent counts too: one the
                // directory knows belongs to its account.
                let owner: Option<String> = tx
                    .prepare_cached("SELECT account_id FROM agent_owners WHERE agent_id = ?1")
                    .map_err(backend)?
                    .query_row([&id], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                if let Some(owner) = owner
                    && owner != new.account.to_string()
                {
                    return Err(StoreError::Conflict(format!(
                        "agent `{id}` belongs to another account"
                    )));
                }
                let version = new.next_version(
                    current.as_ref().map(|a| (a.account, a.version, a.state)),
                )?;
                let definition = new.definition_json();
                let created = current.as_ref().map_or(now, |a| a.created_at);
                tx.prepare_cached(
                    "INSERT INTO agents (id, account_id, version, state, definition, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
                     definition = excluded.definition, updated_at = excluded.updated_at",
                )
                .map_err(backend)?
                .execute(params![
                    id,
                    new.account.to_string(),
                    version,
                    AgentState::Active.as_str(),
                    definition,
                    created.as_millis(),
                    now.as_millis(),
                ])
                .map_err(backend)?;
                tx.prepare_cached(
                    "INSERT INTO agent_versions (agent_id, version, definition, by_user, at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(backend)?
                .execute(params![
                    id,
                    version,
                    definition,
                    new.by.map(|u| u.to_string()),
                    now.as_millis(),
                ])
                .map_err(backend)?;
                tx.prepare_cached(
                    "INSERT INTO agent_owners (agent_id, account_id) VALUES (?1, ?2) \
                     ON CONFLICT (agent_id) DO NOTHING",
                )
                .map_err(backend)?
                .execute(params![id, new.account.to_string()])
                .map_err(|e| crate::directory::missing_account(e, new.account))?;
                let stored = read(&tx, &id)?
                    .ok_or_else(|| StoreError::Conflict("the agent could not be stored".into()))?;
                tx.commit().map_err(backend)?;
                Ok(stored)
            })
            .await
    }

    async fn stored_agent(&self, id: &AgentId) -> StoreResult<Option<StoredAgent>> {
        let id = id.as_str().to_owned();
        self.conn.call(move |c| read(c, &id)).await
    }

    async fn agent_versions(&self, id: &AgentId) -> StoreResult<Vec<AgentVersion>> {
        let id = id.as_str().to_owned();
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {AGENT_VERSION_COLUMNS} FROM agent_versions WHERE agent_id = ?1 ORDER BY version"
                ))
                .map_err(backend)?
                .query_map([id], rows::agent_version)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn agent_version(&self, id: &AgentId, version: u32) -> StoreResult<AgentVersion> {
        let id = id.as_str().to_owned();
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {AGENT_VERSION_COLUMNS} FROM agent_versions WHERE agent_id = ?1 AND version = ?2"
                ))
                .map_err(backend)?
                .query_row(params![id, version], rows::agent_version)
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::not_found("agent version", format!("{id}@{version}")))
            })
            .await
    }

    async fn set_agent_state(&self, id: &AgentId, state: AgentState) -> StoreResult<StoredAgent> {
        let now = self.clock.now();
        let id = id.as_str().to_owned();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let current = read(&tx, &id)?.ok_or_else(|| StoreError::not_found("agent", &id))?;
                if current.state == AgentState::Archived && state != AgentState::Archived {
                    return Err(StoreError::Conflict(format!(
                        "agent `{id}` is archived and stays archived"
                    )));
                }
                tx.prepare_cached("UPDATE agents SET state = ?2, updated_at = ?3 WHERE id = ?1")
                    .map_err(backend)?
                    .execute(params![id, state.as_str(), now.as_millis()])
                    .map_err(backend)?;
                let stored = read(&tx, &id)?.ok_or_else(|| StoreError::not_found("agent", &id))?;
                tx.commit().map_err(backend)?;
                Ok(stored)
            })
            .await
    }

    async fn stored_agents(&self, account: AccountId) -> StoreResult<Vec<StoredAgent>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE account_id = ?1 ORDER BY id"
                ))
                .map_err(backend)?
                .query_map([account.to_string()], rows::stored_agent)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }
}
