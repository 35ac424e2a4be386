//! `SummaryStore` on PostgreSQL: summaries of sessions' older turns.

use async_trait::async_trait;
use thinklio_core::{
    NewSummary, SessionId, StoreError, StoreResult, Summary, SummaryId, SummaryStore,
};

use crate::PostgresStore;
use crate::rows::{self, SUMMARY_COLUMNS, backend, big, query_opt};

#[async_trait]
impl SummaryStore for PostgresStore {
    async fn put_summary(&self, new: NewSummary) -> StoreResult<Summary> {
        let s = new.created(self.clock.now());
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // One summary per session and turn covered: a second write (a
        // summariser retried after a crash, another worker) keeps the first.
        query_opt(
            &tx,
            &format!(
                "INSERT INTO summaries ({SUMMARY_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (session_id, through_seq) DO NOTHING RETURNING id"
            ),
            &[
                &s.id.to_string(),
                &s.session_id.to_string(),
                &s.principal.account.to_string(),
                &s.principal.team.map(|t| t.to_string()),
                &s.principal.user.to_string(),
                &s.through_seq,
                &s.previous.map(|p| p.to_string()),
                &s.text,
                &s.model,
                &big(s.tokens.input_tokens),
                &big(s.tokens.output_tokens),
                &s.cost.as_nanos(),
                &s.interaction_id.to_string(),
                &s.created_at.as_millis(),
            ],
        )
        .await?;
        let row = query_opt(
            &tx,
            &format!(
                "SELECT {SUMMARY_COLUMNS} FROM summaries WHERE session_id = $1 AND through_seq = $2"
            ),
            &[&s.session_id.to_string(), &s.through_seq],
        )
        .await?
        .ok_or_else(|| StoreError::Conflict("the summary could not be stored".into()))?;
        tx.commit().await.map_err(backend)?;
        rows::summary(&row)
    }

    async fn summary(&self, id: SummaryId) -> StoreResult<Summary> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!("SELECT {SUMMARY_COLUMNS} FROM summaries WHERE id = $1"),
            &[&id.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("summary", id))?;
        rows::summary(&row)
    }

    async fn latest_summary(
        &self,
        session: SessionId,
        before_seq: i64,
    ) -> StoreResult<Option<Summary>> {
        let client = self.client().await?;
        query_opt(
            &client,
            &format!(
                "SELECT {SUMMARY_COLUMNS} FROM summaries WHERE session_id = $1 AND through_seq < $2 \
                 ORDER BY through_seq DESC LIMIT 1"
            ),
            &[&session.to_string(), &before_seq],
        )
        .await?
        .map(|r| rows::summary(&r))
        .transpose()
    }
}
