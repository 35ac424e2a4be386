//! `AgentStore` on PostgreSQL: agents kept as data, every change a version.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use thinklio_core::store::rows::TEMPLATE_COLUMNS;
use thinklio_core::{
    AccountId, AgentId, AgentState, AgentStore, AgentTemplate, AgentVersion, NewAgentVersion,
    NewTemplate, StoreError, StoreResult, StoredAgent, TemplateId, TemplateStore,
};

use crate::PostgresStore;
use crate::rows::{self, AGENT_COLUMNS, AGENT_VERSION_COLUMNS, backend, execute, query, query_opt};

/// The agent `id` as stored, read (and, with `lock`, locked) in `tx`.
async fn read(tx: &impl GenericClient, id: &str, lock: bool) -> StoreResult<Option<StoredAgent>> {
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
            "INSERT INTO agents (id, account_id, version, state, definition, created_at, updated_at, origin, template_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
             definition = excluded.definition, updated_at = excluded.updated_at, \
             template_version = excluded.template_version",
            &[
                &id,
                &account,
                &i64::from(version),
                &AgentState::Active.as_str(),
                &definition,
                &created.as_millis(),
                &now.as_millis(),
                &new.origin_json(),
                &new.template_version.map(i64::from),
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
        let client = self.client().await?;
        read(&client, id.as_str(), false).await
    }

    async fn agent_versions(&self, id: &AgentId) -> StoreResult<Vec<AgentVersion>> {
        let client = self.client().await?;
        query(
            &client,
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
        let client = self.client().await?;
        let row = query_opt(
            &client,
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
        let client = self.client().await?;
        query(
            &client,
            &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE account_id = $1 ORDER BY id"),
            &[&account.to_string()],
        )
        .await?
        .iter()
        .map(rows::stored_agent)
        .collect()
    }
}

/// The template `id` as stored, read in `tx`.
async fn read_template(tx: &impl GenericClient, id: &str) -> StoreResult<Option<AgentTemplate>> {
    query_opt(
        tx,
        &format!("SELECT {TEMPLATE_COLUMNS} FROM agent_templates WHERE id = $1 AND version > 0"),
        &[&id],
    )
    .await?
    .map(|r| rows::template(&r))
    .transpose()
}

#[async_trait]
impl TemplateStore for PostgresStore {
    async fn put_template(&self, new: NewTemplate) -> StoreResult<AgentTemplate> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let id = new.id.as_str().to_owned();
        // Two first writes of one template: the second waits on the row
        // the first inserts, then sees it.
        execute(
            &tx,
            "INSERT INTO agent_templates (id, account_id, version, spec, created_at, updated_at) \
             VALUES ($1, $2, 0, '', $3, $3) ON CONFLICT (id) DO NOTHING",
            &[&id, &new.account.to_string(), &now.as_millis()],
        )
        .await?;
        let row = query_opt(
            &tx,
            "SELECT account_id, version FROM agent_templates WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or_else(|| StoreError::Conflict("the template could not be stored".into()))?;
        let owner: AccountId = rows::get::<String>(&row, "account_id")?
            .parse()
            .map_err(|e| rows::corrupt("account_id", e))?;
        let version: i64 = rows::get(&row, "version")?;
        // A row this write just inserted reads as version 0 of its account.
        let current = (version > 0 || owner != new.account)
            .then(|| (owner, u32::try_from(version).unwrap_or(0)));
        let version = new.next_version(current)?;
        execute(
            &tx,
            "UPDATE agent_templates SET version = $2, spec = $3, updated_at = $4 WHERE id = $1",
            &[&id, &i64::from(version), &new.spec_json(), &now.as_millis()],
        )
        .await?;
        let stored = read_template(&tx, &id)
            .await?
            .ok_or_else(|| StoreError::Conflict("the template could not be stored".into()))?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    async fn template(&self, id: &TemplateId) -> StoreResult<Option<AgentTemplate>> {
        let client = self.client().await?;
        read_template(&client, id.as_str()).await
    }

    async fn templates(&self, account: AccountId) -> StoreResult<Vec<AgentTemplate>> {
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {TEMPLATE_COLUMNS} FROM agent_templates WHERE account_id = $1 AND version > 0 ORDER BY id"
            ),
            &[&account.to_string()],
        )
        .await?
        .iter()
        .map(rows::template)
        .collect()
    }

    async fn delete_template(&self, id: &TemplateId) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let n = execute(
            &tx,
            "DELETE FROM agent_templates WHERE id = $1",
            &[&id.as_str()],
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(n > 0)
    }
}
