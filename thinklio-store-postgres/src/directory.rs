//! `DirectoryStore` on PostgreSQL.

use std::collections::BTreeSet;

use async_trait::async_trait;
use thinklio_core::{
    Access, AccessError, AccountId, AccountPolicy, AccountRole, AgentId, Assignment,
    DirectoryStore, Principal, StoreError, StoreResult, TeamId, UserId,
};
use tokio_postgres::error::SqlState;

use crate::PostgresStore;
use crate::rows::{self, backend, execute, query, query_opt};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A write refused by a foreign key names the account that does not exist.
pub(crate) fn missing_account(e: StoreError, account: AccountId) -> StoreError {
    match &e {
        StoreError::Backend(inner)
            if inner
                .downcast_ref::<tokio_postgres::Error>()
                .is_some_and(|pg| rows::is(pg, &SqlState::FOREIGN_KEY_VIOLATION)) =>
        {
            StoreError::not_found("account", account)
        }
        _ => e,
    }
}

#[async_trait]
impl DirectoryStore for PostgresStore {
    async fn put_account(
        &self,
        account: AccountId,
        name: &str,
        policy: AccountPolicy,
    ) -> StoreResult<()> {
        let policy = serde_json::to_string(&policy).map_err(corrupt)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        execute(
            &tx,
            "INSERT INTO accounts (id, name, policy) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET name = $2, policy = $3",
            &[&account.to_string(), &name, &policy],
        )
        .await?;
        tx.commit().await.map_err(backend)
    }

    async fn account_policy(&self, account: AccountId) -> StoreResult<AccountPolicy> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let row = query_opt(
            &tx,
            "SELECT policy FROM accounts WHERE id = $1",
            &[&account.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("account", account))?;
        tx.commit().await.map_err(backend)?;
        serde_json::from_str(&rows::get::<String>(&row, "policy")?).map_err(corrupt)
    }

    async fn put_team(&self, account: AccountId, team: TeamId, name: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        execute(
            &tx,
            "INSERT INTO teams (id, account_id, name) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET name = $3 WHERE teams.account_id = $2",
            &[&team.to_string(), &account.to_string(), &name],
        )
        .await
        .map_err(|e| missing_account(e, account))?;
        tx.commit().await.map_err(backend)
    }

    async fn team_account(&self, team: TeamId) -> StoreResult<Option<AccountId>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT account_id FROM teams WHERE id = $1",
            &[&team.to_string()],
        )
        .await?;
        row.map(|r| rows::parse(&r, "account_id")).transpose()
    }

    async fn set_member(
        &self,
        account: AccountId,
        user: UserId,
        role: AccountRole,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        execute(
            &tx,
            "INSERT INTO members (account_id, user_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id, user_id) DO UPDATE SET role = $3",
            &[&account.to_string(), &user.to_string(), &role.as_str()],
        )
        .await
        .map_err(|e| missing_account(e, account))?;
        tx.commit().await.map_err(backend)
    }

    async fn role(&self, account: AccountId, user: UserId) -> StoreResult<Option<AccountRole>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT role FROM members WHERE account_id = $1 AND user_id = $2",
            &[&account.to_string(), &user.to_string()],
        )
        .await?;
        match row {
            Some(r) => Ok(Some(rows::get::<String>(&r, "role")?.parse()?)),
            None => Ok(None),
        }
    }

    async fn add_to_team(&self, team: TeamId, user: UserId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let member = query_opt(
            &tx,
            "SELECT 1 AS one FROM teams t JOIN members m ON m.account_id = t.account_id \
             WHERE t.id = $1 AND m.user_id = $2",
            &[&team.to_string(), &user.to_string()],
        )
        .await?;
        if member.is_none() {
            return Err(StoreError::Conflict(format!(
                "user {user} is not a member of the account of team {team} (or the team does not exist)"
            )));
        }
        execute(
            &tx,
            "INSERT INTO team_members (team_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&team.to_string(), &user.to_string()],
        )
        .await?;
        tx.commit().await.map_err(backend)
    }

    async fn set_agent_owner(&self, agent: &AgentId, account: AccountId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        execute(
            &tx,
            "INSERT INTO agent_owners (agent_id, account_id) VALUES ($1, $2) \
             ON CONFLICT (agent_id) DO NOTHING",
            &[&agent.as_str(), &account.to_string()],
        )
        .await
        .map_err(|e| missing_account(e, account))?;
        let owner = query_opt(
            &tx,
            "SELECT account_id FROM agent_owners WHERE agent_id = $1",
            &[&agent.as_str()],
        )
        .await?
        .map(|r| rows::get::<String>(&r, "account_id"))
        .transpose()?;
        if owner != Some(account.to_string()) {
            return Err(StoreError::Conflict(format!(
                "agent `{agent}` belongs to another account"
            )));
        }
        tx.commit().await.map_err(backend)
    }

    async fn agent_owner(&self, agent: &AgentId) -> StoreResult<Option<AccountId>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let owner = query_opt(
            &tx,
            "SELECT account_id FROM agent_owners WHERE agent_id = $1",
            &[&agent.as_str()],
        )
        .await?
        .map(|r| rows::parse::<AccountId>(&r, "account_id"))
        .transpose()?;
        tx.commit().await.map_err(backend)?;
        Ok(owner)
    }

    async fn assign(&self, assignment: Assignment) -> StoreResult<()> {
        let capabilities = assignment
            .capabilities
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(corrupt)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        execute(
            &tx,
            "INSERT INTO assignments (agent_id, scope_kind, scope_id, capabilities, approval_mode) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (agent_id, scope_kind, scope_id) DO UPDATE SET capabilities = $4, approval_mode = $5",
            &[
                &assignment.agent_id.as_str(),
                &assignment.scope.kind(),
                &assignment.scope.id(),
                &capabilities,
                &assignment.approval_mode.map(|m| m.as_str()),
            ],
        )
        .await?;
        tx.commit().await.map_err(backend)
    }

    async fn access(
        &self,
        principal: &Principal,
        agent: &AgentId,
    ) -> StoreResult<Result<Access, AccessError>> {
        let principal = *principal;
        let agent = agent.clone();
        let (account, user) = (principal.account.to_string(), principal.user.to_string());
        let client = self.client().await?;
        let policy = query_opt(
            &client,
            "SELECT a.policy FROM accounts a JOIN members m ON m.account_id = a.id \
             WHERE a.id = $1 AND m.user_id = $2",
            &[&account, &user],
        )
        .await?;
        let Some(policy) = policy else {
            return Ok(Err(AccessError::NotAMember {
                user: principal.user,
                account: principal.account,
            }));
        };
        let policy: AccountPolicy =
            serde_json::from_str(&rows::get::<String>(&policy, "policy")?).map_err(corrupt)?;
        if let Some(team) = principal.team {
            let in_team = query_opt(
                &client,
                "SELECT 1 AS one FROM teams t JOIN team_members tm ON tm.team_id = t.id \
                 WHERE t.id = $1 AND t.account_id = $2 AND tm.user_id = $3",
                &[&team.to_string(), &account, &user],
            )
            .await?;
            if in_team.is_none() {
                return Ok(Err(AccessError::NotInTeam {
                    user: principal.user,
                    team,
                    account: principal.account,
                }));
            }
        }
        let owner = query_opt(
            &client,
            "SELECT account_id FROM agent_owners WHERE agent_id = $1",
            &[&agent.as_str()],
        )
        .await?
        .map(|r| rows::get::<String>(&r, "account_id"))
        .transpose()?;
        if owner.as_deref() != Some(account.as_str()) {
            return Ok(Err(AccessError::ForeignAgent {
                agent,
                account: principal.account,
            }));
        }
        let mut assignments = Vec::new();
        for r in query(
            &client,
            "SELECT scope_kind, scope_id, capabilities, approval_mode FROM assignments WHERE agent_id = $1",
            &[&agent.as_str()],
        )
        .await?
        {
            let kind: String = rows::get(&r, "scope_kind")?;
            let id: String = rows::get(&r, "scope_id")?;
            let scope = rows::scope(&kind, &id)?;
            if !scope.covers(&principal) {
                continue;
            }
            let capabilities: Option<BTreeSet<String>> =
                rows::get::<Option<String>>(&r, "capabilities")?
                    .map(|c| serde_json::from_str(&c))
                    .transpose()
                    .map_err(corrupt)?;
            assignments.push(Assignment {
                agent_id: agent.clone(),
                scope,
                capabilities,
                approval_mode: rows::get::<Option<String>>(&r, "approval_mode")?
                    .map(|m| m.parse())
                    .transpose()?,
            });
        }
        if assignments.is_empty() {
            return Ok(Err(AccessError::NotAssigned { agent }));
        }
        Ok(Ok(Access {
            policy,
            assignments,
        }))
    }
}
