//! `SessionStore` on PostgreSQL.

use async_trait::async_trait;
use thinklio_core::approval::ApprovalMode;
use thinklio_core::{
    AgentId, NewSession, Session, SessionId, SessionStore, StoreError, StoreResult, Timestamp,
    Turn, UserId,
};

use crate::PostgresStore;
use crate::rows::{self, SESSION_COLUMNS, backend, query, query_opt};

#[async_trait]
impl SessionStore for PostgresStore {
    async fn open_session(&self, new: NewSession) -> StoreResult<Session> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let session = new.created(now);
        // With a key, a concurrent open of the same session inserts nothing
        // and reads the one that won.
        let inserted = rows::execute(
            &tx,
            "INSERT INTO sessions (id, account_id, team_id, user_id, agent_id, channel, channel_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                &session.id.to_string(),
                &session.principal.account.to_string(),
                &session.principal.team.map(|t| t.to_string()),
                &session.principal.user.to_string(),
                &session.agent_id.as_str(),
                &session.channel,
                &session.key,
                &now.as_millis(),
            ],
        )
        .await?;
        let session = if inserted == 1 {
            session
        } else {
            let row = query_opt(
                &tx,
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE account_id = $1 AND user_id = $2 \
                     AND agent_id = $3 AND channel = $4 AND channel_key = $5"
                ),
                &[
                    &session.principal.account.to_string(),
                    &session.principal.user.to_string(),
                    &session.agent_id.as_str(),
                    &session.channel,
                    &session.key,
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Conflict("the session could not be opened".into()))?;
            rows::session(&row)?
        };
        tx.commit().await.map_err(backend)?;
        Ok(session)
    }

    async fn session(&self, id: SessionId) -> StoreResult<Session> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"),
            &[&id.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("session", id))?;
        rows::session(&row)
    }

    async fn set_session_approval_mode(
        &self,
        id: SessionId,
        mode: Option<ApprovalMode>,
    ) -> StoreResult<Session> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let row = query_opt(
            &tx,
            &format!(
                "UPDATE sessions SET approval_mode = $2 WHERE id = $1 RETURNING {SESSION_COLUMNS}"
            ),
            &[&id.to_string(), &mode.map(|m| m.as_str())],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("session", id))?;
        tx.commit().await.map_err(backend)?;
        rows::session(&row)
    }

    async fn sessions_of_user(&self, user: UserId) -> StoreResult<Vec<Session>> {
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
            ),
            &[&user.to_string()],
        )
        .await?
        .iter()
        .map(rows::session)
        .collect()
    }

    async fn sessions_of_agent(&self, agent: &AgentId, limit: u32) -> StoreResult<Vec<Session>> {
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE agent_id = $1 ORDER BY created_at, id LIMIT $2"
            ),
            &[&agent.as_str(), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(rows::session)
        .collect()
    }

    async fn claim_sessions(
        &self,
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
        max: usize,
    ) -> StoreResult<Vec<SessionId>> {
        let until = now.plus(lease);
        let max = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // The oldest waiting work whose sessions no live worker holds; a
        // session another claim is taking right now is skipped.
        let rows = rows::query(
            &tx,
            &format!(
                "UPDATE sessions SET lease_owner = $2, lease_until = $3 WHERE id IN ( \
                   SELECT s.id FROM sessions s JOIN ( \
                     SELECT i.session_id, MIN(i.seq) AS first FROM interactions i \
                     WHERE i.parent_interaction_id IS NULL AND {} GROUP BY i.session_id) w \
                   ON w.session_id = s.id \
                   WHERE s.lease_until IS NULL OR s.lease_until <= $1 \
                   ORDER BY w.first LIMIT $4 FOR UPDATE OF s SKIP LOCKED) \
                 RETURNING id",
                rows::unfinished("i")
            ),
            &[&now.as_millis(), &worker, &until.as_millis(), &max],
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        rows.iter().map(|r| rows::parse(r, "id")).collect()
    }

    async fn lease_session(
        &self,
        session: SessionId,
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> StoreResult<bool> {
        Ok(self
            .lease_session_read(session, worker, now, lease)
            .await?
            .is_some())
    }

    async fn lease_session_read(
        &self,
        session: SessionId,
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> StoreResult<Option<Session>> {
        let until = now.plus(lease);
        let client = self.client().await?;
        // Taken in one statement, which reads the session too: the row's
        // lock makes a second taker wait and see the first one's lease.
        let taken = query_opt(
            &client,
            &format!(
                "UPDATE sessions SET lease_owner = $2, lease_until = $3 WHERE id = $1 \
                 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until IS NULL OR lease_until <= $4) \
                 RETURNING {SESSION_COLUMNS}"
            ),
            &[
                &session.to_string(),
                &worker,
                &until.as_millis(),
                &now.as_millis(),
            ],
        )
        .await?;
        if let Some(row) = taken {
            return rows::session(&row).map(Some);
        }
        // Not found, or held by another worker.
        query_opt(
            &client,
            "SELECT 1 AS held FROM sessions WHERE id = $1",
            &[&session.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("session", session))?;
        Ok(None)
    }

    async fn release_session(&self, session: SessionId, worker: &str) -> StoreResult<()> {
        let client = self.client().await?;
        // A session given back may still have work (its holder shut down
        // between steps): idle workers are told at once, in the same
        // statement.
        query(
            &client,
            "WITH released AS (UPDATE sessions SET lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2 RETURNING id) \
             SELECT pg_notify($3, '') FROM released",
            &[&session.to_string(), &worker, &&*self.channel],
        )
        .await?;
        Ok(())
    }

    async fn history(
        &self,
        session: SessionId,
        before_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<Turn>> {
        let client = self.client().await?;
        let mut turns = query(
            &client,
            rows::HISTORY_QUERY,
            &[&session.to_string(), &before_seq, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(rows::turn)
        .collect::<StoreResult<Vec<_>>>()?;
        turns.reverse();
        Ok(turns)
    }
}

impl PostgresStore {
    /// Forgets every lease in the database: sessions held, jobs dispatched
    /// and tasks claimed become free to take at once. For a database just
    /// restored from a dump taken while it served (`pg_dump` copies the
    /// leases of the workers of the time, which serve no more), before any
    /// worker starts on it; never while workers run on it. Returns how many
    /// leases it forgot.
    pub async fn forget_leases(&self) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let mut forgot = rows::execute(
            &tx,
            "UPDATE sessions SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL",
            &[],
        )
        .await?;
        // Expired rather than none: their claims take what has run out.
        forgot += rows::execute(
            &tx,
            "UPDATE jobs SET lease_until = 0 WHERE lease_owner IS NOT NULL",
            &[],
        )
        .await?;
        forgot += rows::execute(
            &tx,
            "UPDATE tasks SET lease_until = 0 WHERE state = 'leased'",
            &[],
        )
        .await?;
        rows::signal(&tx, &self.channel).await?;
        tx.commit().await.map_err(backend)?;
        Ok(forgot)
    }
}
