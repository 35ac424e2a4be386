//! `SessionStore` on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use thinklio_core::approval::ApprovalMode;
use thinklio_core::{
    AgentId, NewSession, Session, SessionId, SessionStore, StoreError, StoreResult, Timestamp,
    Turn, UserId,
};

use crate::SqliteStore;
use crate::rows::{self, SESSION_COLUMNS, backend};

#[async_trait]
impl SessionStore for SqliteStore {
    async fn open_session(&self, new: NewSession) -> StoreResult<Session> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                if let Some(key) = &new.key {
                    let existing = tx
                        .prepare_cached(&format!(
                            "SELECT {SESSION_COLUMNS} FROM sessions WHERE account_id = ?1 AND user_id = ?2 \
                             AND agent_id = ?3 AND channel = ?4 AND channel_key = ?5"
                        ))
                        .map_err(backend)?
                        .query_row(
                            params![
                                new.principal.account.to_string(),
                                new.principal.user.to_string(),
                                new.agent_id.as_str(),
                                new.channel,
                                key
                            ],
                            rows::session,
                        )
                        .optional()
                        .map_err(backend)?;
                    if let Some(s) = existing {
                        return Ok(s);
                    }
                }
                let session = new.created(now);
                tx.prepare_cached(
                    "INSERT INTO sessions (id, account_id, team_id, user_id, agent_id, channel, channel_key, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(backend)?
                .execute(params![
                    session.id.to_string(),
                    session.principal.account.to_string(),
                    session.principal.team.map(|t| t.to_string()),
                    session.principal.user.to_string(),
                    session.agent_id.as_str(),
                    session.channel,
                    session.key,
                    session.created_at.as_millis(),
                ])
                .map_err(backend)?;
                tx.commit().map_err(backend)?;
                Ok(session)
            })
            .await
    }

    async fn session(&self, id: SessionId) -> StoreResult<Session> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"
                ))
                .map_err(backend)?
                .query_row([id.to_string()], rows::session)
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::not_found("session", id))
            })
            .await
    }

    async fn set_session_approval_mode(
        &self,
        id: SessionId,
        mode: Option<ApprovalMode>,
    ) -> StoreResult<Session> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "UPDATE sessions SET approval_mode = ?2 WHERE id = ?1 RETURNING {SESSION_COLUMNS}"
                ))
                .map_err(backend)?
                .query_row(params![id.to_string(), mode.map(|m| m.as_str())], rows::session)
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::not_found("session", id))
            })
            .await
    }

    async fn sessions_of_user(&self, user: UserId) -> StoreResult<Vec<Session>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 ORDER BY created_at DESC, id DESC"
                ))
                .map_err(backend)?
                .query_map([user.to_string()], rows::session)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn sessions_of_agent(&self, agent: &AgentId, limit: u32) -> StoreResult<Vec<Session>> {
        let agent = agent.as_str().to_owned();
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE agent_id = ?1 ORDER BY created_at, id LIMIT ?2"
                ))
                .map_err(backend)?
                .query_map(params![agent, limit], rows::session)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn claim_sessions(
        &self,
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
        max: usize,
    ) -> StoreResult<Vec<SessionId>> {
        let worker = worker.to_owned();
        let until = now.plus(lease);
        let max = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        let waiting = rows::unfinished("i");
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let ids: Vec<String> = tx
                    .prepare_cached(&format!(
                        "SELECT i.session_id FROM interactions i JOIN sessions s ON s.id = i.session_id \
                         WHERE i.parent_interaction_id IS NULL \
                         AND (s.lease_until IS NULL OR s.lease_until <= ?1) \
                         AND {waiting} GROUP BY i.session_id ORDER BY MIN(i.seq) LIMIT ?2"
                    ))
                    .map_err(backend)?
                    .query_map(params![now.as_millis(), max], |r| r.get(0))
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                let mut claimed = Vec::with_capacity(ids.len());
                for id in ids {
                    tx.prepare_cached("UPDATE sessions SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1")
                        .map_err(backend)?
                        .execute(params![id, worker, until.as_millis()])
                        .map_err(backend)?;
                    claimed.push(
                        id.parse()
                            .map_err(|_| StoreError::Corrupt(format!("bad session id `{id}`")))?,
                    );
                }
                tx.commit().map_err(backend)?;
                Ok(claimed)
            })
            .await
    }

    async fn lease_session(
        &self,
        session: SessionId,
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> StoreResult<bool> {
        let worker = worker.to_owned();
        let until = now.plus(lease);
        self.conn
            .call(move |c| {
                let changed = c
                    .prepare_cached(
                        "UPDATE sessions SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1 \
                         AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until <= ?4)",
                    )
                    .map_err(backend)?
                    .execute(params![
                        session.to_string(),
                        worker,
                        until.as_millis(),
                        now.as_millis()
                    ])
                    .map_err(backend)?;
                if changed == 0 {
                    // Not found, or held by another worker.
                    let exists: bool = c
                        .prepare_cached("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?1)")
                        .map_err(backend)?
                        .query_row([session.to_string()], |r| r.get(0))
                        .map_err(backend)?;
                    if !exists {
                        return Err(StoreError::not_found("session", session));
                    }
                }
                Ok(changed == 1)
            })
            .await
    }

    async fn release_session(&self, session: SessionId, worker: &str) -> StoreResult<()> {
        let worker = worker.to_owned();
        self.conn
            .call(move |c| {
                c.prepare_cached(
                    "UPDATE sessions SET lease_owner = NULL, lease_until = NULL WHERE id = ?1 AND lease_owner = ?2",
                )
                .map_err(backend)?
                .execute(params![session.to_string(), worker])
                .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn history(
        &self,
        session: SessionId,
        before_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<Turn>> {
        self.conn
            .call(move |c| {
                let mut turns = c
                    .prepare_cached(rows::HISTORY_QUERY)
                    .map_err(backend)?
                    .query_map(
                        params![session.to_string(), before_seq, i64::from(limit)],
                        rows::turn,
                    )
                    .map_err(backend)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?;
                turns.reverse();
                Ok(turns)
            })
            .await
    }
}
