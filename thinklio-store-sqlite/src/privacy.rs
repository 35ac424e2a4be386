//! `PrivacyStore` on SQLite.

use async_trait::async_trait;
use rusqlite::params;
use thinklio_core::{AccountId, FactOwner, ForgetReport, PrivacyStore, StoreResult, UserId};

use crate::SqliteStore;
use crate::rows::backend;

#[async_trait]
impl PrivacyStore for SqliteStore {
    async fn forget_user(&self, account: AccountId, user: UserId) -> StoreResult<ForgetReport> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let (a, u) = (account.to_string(), user.to_string());
                let mine = "SELECT id FROM interactions WHERE account_id = ?1 AND user_id = ?2";
                let sessions = "SELECT id FROM sessions WHERE account_id = ?1 AND user_id = ?2";
                let run = |sql: &str| -> StoreResult<u64> {
                    let n = tx.execute(sql, params![a, u]).map_err(backend)?;
                    Ok(u64::try_from(n).unwrap_or(0))
                };
                run(&format!(
                    "DELETE FROM step_transitions WHERE step_id IN \
                     (SELECT id FROM steps WHERE interaction_id IN ({mine}))"
                ))?;
                run(&format!(
                    "DELETE FROM approval_decisions WHERE interaction_id IN ({mine})"
                ))?;
                run(&format!("DELETE FROM steps WHERE interaction_id IN ({mine})"))?;
                run(&format!("DELETE FROM outbox WHERE interaction_id IN ({mine})"))?;
                run(&format!(
                    "DELETE FROM events WHERE interaction_id IN ({mine}) OR session_id IN ({sessions})"
                ))?;
                let usage_anonymized = run(&format!(
                    "UPDATE usage_records SET user_id = '{}', interaction_id = '', step_id = '' \
                     WHERE account_id = ?1 AND user_id = ?2",
                    UserId::ANONYMOUS
                ))?;
                let interactions = run("DELETE FROM interactions WHERE account_id = ?1 AND user_id = ?2")?;
                let sessions = run("DELETE FROM sessions WHERE account_id = ?1 AND user_id = ?2")?;
                let todos = run("DELETE FROM todos WHERE account_id = ?1 AND user_id = ?2")?;
                let summaries = run("DELETE FROM summaries WHERE account_id = ?1 AND user_id = ?2")?;
                let images = run("DELETE FROM images WHERE account_id = ?1 AND user_id = ?2")?;
                let jobs_of = "SELECT id FROM jobs WHERE account_id = ?1 AND user_id = ?2";
                run(&format!("DELETE FROM job_notifications WHERE job_id IN ({jobs_of})"))?;
                run(&format!("DELETE FROM job_observers WHERE job_id IN ({jobs_of})"))?;
                let jobs = run("DELETE FROM jobs WHERE account_id = ?1 AND user_id = ?2")?;
                let tasks = run("DELETE FROM tasks WHERE owner_account = ?1 AND owner_user = ?2")?;
                let memberships = run(
                    "DELETE FROM team_members WHERE user_id = ?2 \
                     AND team_id IN (SELECT id FROM teams WHERE account_id = ?1)",
                )? + run(
                    "DELETE FROM assignments WHERE scope_kind = 'user' AND scope_id = ?2 \
                     AND agent_id IN (SELECT agent_id FROM agent_owners WHERE account_id = ?1)",
                )? + run("DELETE FROM members WHERE account_id = ?1 AND user_id = ?2")?;
                let facts = crate::knowledge::delete_owned(&tx, account, &FactOwner::User(user), now)?;
                tx.execute("DELETE FROM budgets WHERE scope_kind = 'user' AND scope_id = ?1", [&u])
                    .map_err(backend)?;
                tx.execute("DELETE FROM budget_warnings WHERE scope_kind = 'user' AND scope_id = ?1", [&u])
                    .map_err(backend)?;
                tx.commit().map_err(backend)?;
                Ok(ForgetReport {
                    sessions,
                    interactions,
                    usage_anonymized,
                    todos,
                    facts,
                    jobs,
                    tasks,
                    memberships,
                    summaries,
                    images,
                })
            })
            .await
    }
}
