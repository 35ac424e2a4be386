//! `AgentStore` on SQLite: agents kept as data, every change a version.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use thinklio_core::store::rows::TEMPLATE_COLUMNS;
use thinklio_core::{
    AccountId, AgentId, AgentState, AgentStore, AgentTemplate, AgentVersion, NewAgentVersion,
    NewTemplate, StoreError, StoreResult, StoredAgent, TemplateId, TemplateStore,
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
                    "INSERT INTO agents (id, account_id, version, state, definition, created_at, updated_at, origin, template_version) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
                     definition = excluded.definition, updated_at = excluded.updated_at, \
                     template_version = excluded.template_version",
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
                    new.origin_json(),
                    new.template_version,
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

/// The template `id` as stored.
fn read_template(c: &rusqlite::Connection, id: &str) -> StoreResult<Option<AgentTemplate>> {
    c.prepare_cached(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM agent_templates WHERE id = ?1"
    ))
    .map_err(backend)?
    .query_row([id], rows::template)
    .optional()
    .map_err(backend)
}

#[async_trait]
impl TemplateStore for SqliteStore {
    async fn put_template(&self, new: NewTemplate) -> StoreResult<AgentTemplate> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let id = new.id.as_str().to_owned();
                let current = read_template(&tx, &id)?;
                let version =
                    new.next_version(current.as_ref().map(|t| (t.account, t.version)))?;
                let created = current.as_ref().map_or(now, |t| t.created_at);
                tx.prepare_cached(
                    "INSERT INTO agent_templates (id, account_id, version, spec, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
                     spec = excluded.spec, updated_at = excluded.updated_at",
                )
                .map_err(backend)?
                .execute(params![
                    id,
                    new.account.to_string(),
                    version,
                    new.spec_json(),
                    created.as_millis(),
                    now.as_millis(),
                ])
                .map_err(backend)?;
                let stored = read_template(&tx, &id)?.ok_or_else(|| {
                    StoreError::Conflict("the template could not be stored".into())
                })?;
                tx.commit().map_err(backend)?;
                Ok(stored)
            })
            .await
    }

    async fn template(&self, id: &TemplateId) -> StoreResult<Option<AgentTemplate>> {
        let id = id.as_str().to_owned();
        self.conn.call(move |c| read_template(c, &id)).await
    }

    async fn templates(&self, account: AccountId) -> StoreResult<Vec<AgentTemplate>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {TEMPLATE_COLUMNS} FROM agent_templates WHERE account_id = ?1 ORDER BY id"
                ))
                .map_err(backend)?
                .query_map([account.to_string()], rows::template)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn delete_template(&self, id: &TemplateId) -> StoreResult<bool> {
        let id = id.as_str().to_owned();
        self.conn
            .call(move |c| {
                c.prepare_cached("DELETE FROM agent_templates WHERE id = ?1")
                    .map_err(backend)?
                    .execute([id])
                    .map(|n| n > 0)
                    .map_err(backend)
            })
            .await
    }
}
