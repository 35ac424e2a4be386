//! `DirectoryStore` on SQLite.

use std::collections::BTreeSet;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use thinklio_core::{
    Access, AccessError, AccountId, AccountPolicy, AccountRole, AgentId, Assignment,
    DirectoryStore, Principal, StoreError, StoreResult, TeamId, UserId,
};

use crate::SqliteStore;
use crate::rows::{self, backend, is_unique_violation};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A write refused by a foreign key names the account that does not exist.
pub(crate) fn missing_account(e: rusqlite::Error, account: AccountId) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            StoreError::not_found("account", account)
        }
        _ => backend(e),
    }
}

#[async_trait]
impl DirectoryStore for SqliteStore {
    async fn put_account(
        &self,
        account: AccountId,
        name: &str,
        policy: AccountPolicy,
    ) -> StoreResult<()> {
        let name = name.to_owned();
        let policy = serde_json::to_string(&policy).map_err(corrupt)?;
        self.conn
            .call(move |c| {
                c.prepare_cached(
                    "INSERT INTO accounts (id, name, policy) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (id) DO UPDATE SET name = ?2, policy = ?3",
                )
                .map_err(backend)?
                .execute(params![account.to_string(), name, policy])
                .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn account_policy(&self, account: AccountId) -> StoreResult<AccountPolicy> {
        self.conn
            .call(move |c| {
                let policy: Option<String> = c
                    .prepare_cached("SELECT policy FROM accounts WHERE id = ?1")
                    .map_err(backend)?
                    .query_row([account.to_string()], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                let policy = policy.ok_or_else(|| StoreError::not_found("account", account))?;
                serde_json::from_str(&policy).map_err(corrupt)
            })
            .await
    }

    async fn put_team(&self, account: AccountId, team: TeamId, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.conn
            .call(move |c| {
                c.prepare_cached(
                    "INSERT INTO teams (id, account_id, name) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (id) DO UPDATE SET name = ?3 WHERE account_id = ?2",
                )
                .map_err(backend)?
                .execute(params![team.to_string(), account.to_string(), name])
                .map_err(|e| missing_account(e, account))?;
                Ok(())
            })
            .await
    }

    async fn team_account(&self, team: TeamId) -> StoreResult<Option<AccountId>> {
        self.conn
            .call(move |c| {
                c.prepare_cached("SELECT account_id FROM teams WHERE id = ?1")
                    .map_err(backend)?
                    .query_row([team.to_string()], |r| r.get::<_, String>(0))
                    .optional()
                    .map_err(backend)?
                    .map(|a| {
                        a.parse()
                            .map_err(|_| StoreError::Corrupt(format!("account id `{a}`")))
                    })
                    .transpose()
            })
            .await
    }

    async fn set_member(
        &self,
        account: AccountId,
        user: UserId,
        role: AccountRole,
    ) -> StoreResult<()> {
        self.conn
            .call(move |c| {
                c.prepare_cached(
                    "INSERT INTO members (account_id, user_id, role) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (account_id, user_id) DO UPDATE SET role = ?3",
                )
                .map_err(backend)?
                .execute(params![
                    account.to_string(),
                    user.to_string(),
                    role.as_str()
                ])
                .map_err(|e| missing_account(e, account))?;
                Ok(())
            })
            .await
    }

    async fn role(&self, account: AccountId, user: UserId) -> StoreResult<Option<AccountRole>> {
        self.conn
            .call(move |c| {
                let role: Option<String> = c
                    .prepare_cached(
                        "SELECT role FROM members WHERE account_id = ?1 AND user_id = ?2",
                    )
                    .map_err(backend)?
                    .query_row(params![account.to_string(), user.to_string()], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                role.map(|r| r.parse()).transpose()
            })
            .await
    }

    async fn add_to_team(&self, team: TeamId, user: UserId) -> StoreResult<()> {
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let member: bool = tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM teams t JOIN members m ON m.account_id = t.account_id \
                         WHERE t.id = ?1 AND m.user_id = ?2)",
                    )
                    .map_err(backend)?
                    .query_row(params![team.to_string(), user.to_string()], |r| r.get(0))
                    .map_err(backend)?;
                if !member {
                    return Err(StoreError::Conflict(format!(
                        "user {user} is not a member of the account of team {team} (or the team does not exist)"
                    )));
                }
                tx.prepare_cached("INSERT OR IGNORE INTO team_members (team_id, user_id) VALUES (?1, ?2)")
                    .map_err(backend)?
                    .execute(params![team.to_string(), user.to_string()])
                    .map_err(backend)?;
                tx.commit().map_err(backend)
            })
            .await
    }

    async fn set_agent_owner(&self, agent: &AgentId, account: AccountId) -> StoreResult<()> {
        let agent = agent.clone();
        self.conn
            .call(move |c| {
                c.prepare_cached(
                    "INSERT INTO agent_owners (agent_id, account_id) VALUES (?1, ?2) \
                     ON CONFLICT (agent_id) DO NOTHING",
                )
                .map_err(backend)?
                .execute(params![agent.as_str(), account.to_string()])
                .map_err(|e| missing_account(e, account))?;
                let owner: String = c
                    .prepare_cached("SELECT account_id FROM agent_owners WHERE agent_id = ?1")
                    .map_err(backend)?
                    .query_row([agent.as_str()], |r| r.get(0))
                    .map_err(backend)?;
                if owner != account.to_string() {
                    return Err(StoreError::Conflict(format!(
                        "agent `{agent}` belongs to another account"
                    )));
                }
                Ok(())
            })
            .await
    }

    async fn agent_owner(&self, agent: &AgentId) -> StoreResult<Option<AccountId>> {
        let agent = agent.clone();
        self.conn
            .call(move |c| {
                let owner: Option<String> = c
                    .prepare_cached("SELECT account_id FROM agent_owners WHERE agent_id = ?1")
                    .map_err(backend)?
                    .query_row([agent.as_str()], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                owner.map(|o| o.parse().map_err(corrupt)).transpose()
            })
            .await
    }

    async fn assign(&self, assignment: Assignment) -> StoreResult<()> {
        let capabilities = assignment
            .capabilities
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(corrupt)?;
        self.conn
            .call(move |c| {
                let (kind, id) = (assignment.scope.kind(), assignment.scope.id());
                c.prepare_cached(
                    "INSERT INTO assignments (agent_id, scope_kind, scope_id, capabilities, approval_mode) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (agent_id, scope_kind, scope_id) DO UPDATE SET capabilities = ?4, approval_mode = ?5",
                )
                .map_err(backend)?
                .execute(params![
                    assignment.agent_id.as_str(),
                    kind,
                    id,
                    capabilities,
                    assignment.approval_mode.map(|m| m.as_str())
                ])
                .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict(e.to_string()) } else { backend(e) })?;
                Ok(())
            })
            .await
    }

    async fn access(
        &self,
        principal: &Principal,
        agent: &AgentId,
    ) -> StoreResult<Result<Access, AccessError>> {
        let principal = *principal;
        let agent = agent.clone();
        self.conn
            .call(move |c| {
                let (account, user) = (principal.account.to_string(), principal.user.to_string());
                let policy: Option<String> = c
                    .prepare_cached(
                        "SELECT a.policy FROM accounts a JOIN members m ON m.account_id = a.id \
                         WHERE a.id = ?1 AND m.user_id = ?2",
                    )
                    .map_err(backend)?
                    .query_row(params![account, user], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                let Some(policy) = policy else {
                    return Ok(Err(AccessError::NotAMember {
                        user: principal.user,
                        account: principal.account,
                    }));
                };
                let policy: AccountPolicy = serde_json::from_str(&policy).map_err(corrupt)?;
                if let Some(team) = principal.team {
                    let in_team: bool = c
                        .prepare_cached(
                            "SELECT EXISTS (SELECT 1 FROM teams t JOIN team_members tm ON tm.team_id = t.id \
                             WHERE t.id = ?1 AND t.account_id = ?2 AND tm.user_id = ?3)",
                        )
                        .map_err(backend)?
                        .query_row(params![team.to_string(), account, user], |r| r.get(0))
                        .map_err(backend)?;
                    if !in_team {
                        return Ok(Err(AccessError::NotInTeam {
                            user: principal.user,
                            team,
                            account: principal.account,
                        }));
                    }
                }
                let owner: Option<String> = c
                    .prepare_cached("SELECT account_id FROM agent_owners WHERE agent_id = ?1")
                    .map_err(backend)?
                    .query_row([agent.as_str()], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                if owner.as_deref() != Some(account.as_str()) {
                    return Ok(Err(AccessError::ForeignAgent {
                        agent,
                        account: principal.account,
                    }));
                }
                type AssignmentRow = (String, String, Option<String>, Option<String>);
                let rows: Vec<AssignmentRow> = c
                    .prepare_cached(
                        "SELECT scope_kind, scope_id, capabilities, approval_mode FROM assignments WHERE agent_id = ?1",
                    )
                    .map_err(backend)?
                    .query_map([agent.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                let mut assignments = Vec::new();
                for (kind, id, capabilities, mode) in rows {
                    let scope = rows::scope(&kind, &id)?;
                    if !scope.covers(&principal) {
                        continue;
                    }
                    let capabilities: Option<BTreeSet<String>> =
                        capabilities.map(|c| serde_json::from_str(&c)).transpose().map_err(corrupt)?;
                    assignments.push(Assignment {
                        agent_id: agent.clone(),
                        scope,
                        capabilities,
                        approval_mode: mode.map(|m| m.parse()).transpose()?,
                    });
                }
                if assignments.is_empty() {
                    return Ok(Err(AccessError::NotAssigned { agent }));
                }
                Ok(Ok(Access { policy, assignments }))
            })
            .await
    }
}
