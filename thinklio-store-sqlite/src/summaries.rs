//! `SummaryStore` on SQLite: summaries of sessions' older turns.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use thinklio_core::{
    NewSummary, SessionId, StoreError, StoreResult, Summary, SummaryId, SummaryStore,
};

use crate::SqliteStore;
use crate::rows::{self, SUMMARY_COLUMNS, backend};

#[async_trait]
impl SummaryStore for SqliteStore {
    async fn put_summary(&self, new: NewSummary) -> StoreResult<Summary> {
        let summary = new.created(self.clock.now());
        self.conn
            .call(move |c| {
                let s = &summary;
                // One summary per session and turn covered: a second write
                // (a summariser retried after a crash) keeps the first.
                let inserted = c
                    .prepare_cached(&format!(
                        "INSERT INTO summaries ({SUMMARY_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                         ON CONFLICT (session_id, through_seq) DO NOTHING"
                    ))
                    .map_err(backend)?
                    .execute(params![
                        s.id.to_string(),
                        s.session_id.to_string(),
                        s.principal.account.to_string(),
                        s.principal.team.map(|t| t.to_string()),
                        s.principal.user.to_string(),
                        s.through_seq,
                        s.previous.map(|p| p.to_string()),
                        s.text,
                        s.model,
                        i64::try_from(s.tokens.input_tokens).unwrap_or(i64::MAX),
                        i64::try_from(s.tokens.output_tokens).unwrap_or(i64::MAX),
                        s.cost.as_nanos(),
                        s.interaction_id.to_string(),
                        s.created_at.as_millis(),
                    ])
                    .map_err(backend)?;
                if inserted == 1 {
                    return Ok(summary);
                }
                c.prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM summaries WHERE session_id = ?1 AND through_seq = ?2"
                ))
                .map_err(backend)?
                .query_row(params![s.session_id.to_string(), s.through_seq], rows::summary)
                .map_err(backend)
            })
            .await
    }

    async fn summary(&self, id: SummaryId) -> StoreResult<Summary> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM summaries WHERE id = ?1"
                ))
                .map_err(backend)?
                .query_row([id.to_string()], rows::summary)
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::not_found("summary", id))
            })
            .await
    }

    async fn latest_summary(
        &self,
        session: SessionId,
        before_seq: i64,
    ) -> StoreResult<Option<Summary>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM summaries WHERE session_id = ?1 AND through_seq < ?2 \
                     ORDER BY through_seq DESC LIMIT 1"
                ))
                .map_err(backend)?
                .query_row(params![session.to_string(), before_seq], rows::summary)
                .optional()
                .map_err(backend)
            })
            .await
    }
}
