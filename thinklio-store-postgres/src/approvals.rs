//! `ApprovalStore` on PostgreSQL: decisions about calls that wait for a
//! person.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use thinklio_core::approval::{NewDecision, StoredDecision, check_resume};
use thinklio_core::store::{ApprovalFilter, ApprovalStore};
use thinklio_core::{
    Event, EventKind, SessionId, Step, StepId, StepState, StoreError, StoreResult,
};

use crate::PostgresStore;
use crate::interactions::{load_step, record_transition, session_of, started_event};
use crate::rows::{
    self, DECISION_COLUMNS, STEP_COLUMNS, append_event, backend, decision, execute, query,
    query_opt,
};

async fn load_decision(tx: &impl GenericClient, step: &str) -> StoreResult<Option<StoredDecision>> {
    query_opt(
        tx,
        &format!("SELECT {DECISION_COLUMNS} FROM approval_decisions WHERE step_id = $1"),
        &[&step],
    )
    .await?
    .as_ref()
    .map(decision)
    .transpose()
}

#[async_trait]
impl ApprovalStore for PostgresStore {
    async fn decide(&self, new: NewDecision) -> StoreResult<(StoredDecision, Option<Event>)> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let id = new.step_id.to_string();
        // The step's row is locked: two decisions about it take turns.
        let Some(step) = load_step(&tx, &id, true).await? else {
            return Err(StoreError::not_found("step", new.step_id));
        };
        if let Some(taken) = new.check(&step, load_decision(&tx, &id).await?.as_ref())? {
            return Ok((taken, None));
        }
        let stored = new.stored(step.interaction_id, now);
        let interaction = step.interaction_id.to_string();
        let decision_json = serde_json::to_string(&stored.decision)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        execute(
            &tx,
            &format!(
                "INSERT INTO approval_decisions ({DECISION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            &[
                &id,
                &interaction,
                &decision_json,
                &stored.by.account.to_string(),
                &stored.by.user.map(|u| u.to_string()),
                &stored.channel,
                &now.as_millis(),
            ],
        )
        .await?;
        let session = session_of(&tx, &interaction).await?;
        let event = append_event(
            &tx,
            EventKind::ApprovalDecided,
            Some(session),
            Some(interaction),
            Some(id),
            &stored.event_payload(),
            now,
        )
        .await?;
        // The interaction may go on: idle interaction workers of every
        // process are woken to claim it.
        crate::rows::signal(&tx, &self.channel).await?;
        tx.commit().await.map_err(backend)?;
        Ok((stored, Some(event)))
    }

    async fn decision(&self, step: StepId) -> StoreResult<Option<StoredDecision>> {
        let client = self.client().await?;
        load_decision(&client, &step.to_string()).await
    }

    async fn waiting_steps(&self, filter: ApprovalFilter) -> StoreResult<Vec<(Step, SessionId)>> {
        let client = self.client().await?;
        let (condition, param) = match filter {
            ApprovalFilter::Session(s) => ("i.session_id = $1", s.to_string()),
            ApprovalFilter::Account(a) => ("i.account_id = $1", a.to_string()),
            _ => ("$1::TEXT IS NOT NULL", String::new()),
        };
        let columns = thinklio_core::store::rows::columns_of(STEP_COLUMNS, "s");
        query(
            &client,
            &format!(
                "SELECT {columns}, i.session_id AS waiting_session FROM steps s \
                 JOIN interactions i ON i.id = s.interaction_id \
                 WHERE s.state = 'waiting' AND s.mode = 'interactive' AND {condition} \
                 AND NOT EXISTS (SELECT 1 FROM approval_decisions d WHERE d.step_id = s.id) \
                 ORDER BY s.updated_at, i.seq, s.seq"
            ),
            &[&param],
        )
        .await?
        .iter()
        .map(|r| Ok((rows::step(r)?, rows::parse(r, "waiting_session")?)))
        .collect()
    }

    async fn resume_step(&self, id: StepId) -> StoreResult<(Step, Event)> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let id_text = id.to_string();
        let Some(mut step) = load_step(&tx, &id_text, true).await? else {
            return Err(StoreError::not_found("step", id));
        };
        check_resume(&step, load_decision(&tx, &id_text).await?.as_ref())?;
        execute(
            &tx,
            "UPDATE steps SET state = 'running', updated_at = $2 WHERE id = $1",
            &[&id_text, &now.as_millis()],
        )
        .await?;
        record_transition(&tx, &id_text, Some(step.state), StepState::Running, now).await?;
        step.state = StepState::Running;
        step.updated_at = now;
        let session = session_of(&tx, &step.interaction_id.to_string()).await?;
        let event = started_event(&tx, &step, session, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok((step, event))
    }
}
