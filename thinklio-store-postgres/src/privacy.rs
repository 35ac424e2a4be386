//! `PrivacyStore` on PostgreSQL.

use async_trait::async_trait;
use thinklio_core::{AccountId, FactOwner, ForgetReport, PrivacyStore, StoreResult, UserId};

use crate::PostgresStore;
use crate::rows::{backend, execute};

#[async_trait]
impl PrivacyStore for PostgresStore {
    async fn forget_user(&self, account: AccountId, user: UserId) -> StoreResult<ForgetReport> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let (a, u) = (account.to_string(), user.to_string());
        let mine = "SELECT id FROM interactions WHERE account_id = $1 AND user_id = $2";
        let sessions = "SELECT id FROM sessions WHERE account_id = $1 AND user_id = $2";
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&a, &u];
        execute(
            &tx,
            &format!(
                "DELETE FROM step_transitions WHERE step_id IN \
                 (SELECT id FROM steps WHERE interaction_id IN ({mine}))"
            ),
            &params,
        )
        .await?;
        execute(
            &tx,
            &format!("DELETE FROM approval_decisions WHERE interaction_id IN ({mine})"),
            &params,
        )
        .await?;
        execute(
            &tx,
            &format!("DELETE FROM steps WHERE interaction_id IN ({mine})"),
            &params,
        )
        .await?;
        execute(
            &tx,
            &format!("DELETE FROM outbox WHERE interaction_id IN ({mine})"),
            &params,
        )
        .await?;
        execute(
            &tx,
            &format!(
                "DELETE FROM events WHERE interaction_id IN ({mine}) OR session_id IN ({sessions})"
            ),
            &params,
        )
        .await?;
        let usage_anonymized = execute(
            &tx,
            &format!(
                "UPDATE usage_records SET user_id = '{}', interaction_id = '', step_id = '' \
                 WHERE account_id = $1 AND user_id = $2",
                UserId::ANONYMOUS
            ),
            &params,
        )
        .await?;
        let interactions = execute(
            &tx,
            "DELETE FROM interactions WHERE account_id = $1 AND user_id = $2",
            &params,
        )
        .await?;
        let sessions = execute(
            &tx,
            "DELETE FROM sessions WHERE account_id = $1 AND user_id = $2",
            &params,
        )
        .await?;
        let todos = execute(
            &tx,
            "DELETE FROM todos WHERE account_id = $1 AND user_id = $2",
            &params,
        )
        .await?;
        let summaries = execute(
            &tx,
            "DELETE FROM summaries WHERE account_id = $1 AND user_id = $2",
            &params,
        )
        .await?;
        let images = execute(
            &tx,
            "DELETE FROM images WHERE account_id = $1 AND user_id = $2",
            &params,
        )
        .await?;
        let facts =
            crate::knowledge::delete_owned(&tx, account, &FactOwner::User(user), now).await?;
        let jobs_of = "SELECT id FROM jobs WHERE account_id = $1 AND user_id = $2";
        for table in ["job_notifications", "job_observers"] {
            execute(
                &tx,
                &format!("DELETE FROM {table} WHERE job_id IN ({jobs_of})"),
                &params,
            )
            .await?;
        }
        let jobs = execute(
            &tx,
            "DELETE FROM jobs WHERE account_id = $1 AND user_id = $2",
            &params,
        )
        .await?;
        let tasks = execute(
            &tx,
            "DELETE FROM tasks WHERE owner_account = $1 AND owner_user = $2",
            &params,
        )
        .await?;
        let mut memberships = 0;
        for sql in [
            "DELETE FROM team_members WHERE user_id = $2 \
             AND team_id IN (SELECT id FROM teams WHERE account_id = $1)",
            "DELETE FROM assignments WHERE scope_kind = 'user' AND scope_id = $2 \
             AND agent_id IN (SELECT agent_id FROM agent_owners WHERE account_id = $1)",
            "DELETE FROM members WHERE account_id = $1 AND user_id = $2",
        ] {
            memberships += execute(&tx, sql, &params).await?;
        }
        execute(
            &tx,
            "DELETE FROM budgets WHERE scope_kind = 'user' AND scope_id = $1",
            &[&u],
        )
        .await?;
        execute(
            &tx,
            "DELETE FROM budget_warnings WHERE scope_kind = 'user' AND scope_id = $1",
            &[&u],
        )
        .await?;
        tx.commit().await.map_err(backend)?;
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
    }
}
