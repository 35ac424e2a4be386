//! `ApprovalStore` on SQLite: decisions about calls that wait for a person.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use thinklio_core::approval::{NewDecision, StoredDecision, check_resume};
use thinklio_core::store::{ApprovalFilter, ApprovalStore};
use thinklio_core::{
    Event, EventKind, SessionId, Step, StepId, StepState, StoreError, StoreResult,
};

use crate::SqliteStore;
use crate::interactions::{append_event, load_step, record_transition, session_of, started_event};
use crate::rows::{self, DECISION_COLUMNS, STEP_COLUMNS, backend, decision};

fn load_decision(c: &rusqlite::Connection, step: &str) -> StoreResult<Option<StoredDecision>> {
    c.prepare_cached(&format!(
        "SELECT {DECISION_COLUMNS} FROM approval_decisions WHERE step_id = ?1"
    ))
    .map_err(backend)?
    .query_row([step], decision)
    .optional()
    .map_err(backend)
}

#[async_trait]
impl ApprovalStore for SqliteStore {
    async fn decide(&self, new: NewDecision) -> StoreResult<(StoredDecision, Option<Event>)> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let id = new.step_id.to_string();
                let Some(step) = load_step(&tx, &id)? else {
                    return Err(StoreError::not_found("step", new.step_id));
                };
                if let Some(taken) = new.check(&step, load_decision(&tx, &id)?.as_ref())? {
                    return Ok((taken, None));
                }
                let stored = new.stored(step.interaction_id, now);
                let interaction = step.interaction_id.to_string();
                tx.prepare_cached(&format!(
                    "INSERT INTO approval_decisions ({DECISION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ))
                .map_err(backend)?
                .execute(params![
                    id,
                    interaction,
                    serde_json::to_string(&stored.decision)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    stored.by.account.to_string(),
                    stored.by.user.map(|u| u.to_string()),
                    stored.channel,
                    now.as_millis(),
                ])
                .map_err(backend)?;
                let session = session_of(&tx, &interaction)?;
                let event = append_event(
                    &tx,
                    EventKind::ApprovalDecided,
                    Some(session),
                    Some(interaction),
                    Some(id),
                    &stored.event_payload(),
                    now,
                )?;
                tx.commit().map_err(backend)?;
                Ok((stored, Some(event)))
            })
            .await
    }

    async fn decision(&self, step: StepId) -> StoreResult<Option<StoredDecision>> {
        self.conn
            .call(move |c| load_decision(c, &step.to_string()))
            .await
    }

    async fn waiting_steps(&self, filter: ApprovalFilter) -> StoreResult<Vec<(Step, SessionId)>> {
        self.conn
            .call(move |c| {
                let (condition, param) = match filter {
                    ApprovalFilter::Session(s) => ("i.session_id = ?1", s.to_string()),
                    ApprovalFilter::Account(a) => ("i.account_id = ?1", a.to_string()),
                    _ => ("?1 IS NOT NULL", String::new()),
                };
                let columns = thinklio_core::store::rows::columns_of(STEP_COLUMNS, "s");
                c.prepare_cached(&format!(
                    "SELECT {columns}, i.session_id AS waiting_session FROM steps s \
                     JOIN interactions i ON i.id = s.interaction_id \
                     WHERE s.state = 'waiting' AND s.mode = 'interactive' AND {condition} \
                     AND NOT EXISTS (SELECT 1 FROM approval_decisions d WHERE d.step_id = s.id) \
                     ORDER BY s.updated_at, i.seq, s.seq"
                ))
                .map_err(backend)?
                .query_map([param], |r| {
                    Ok((rows::step(r)?, rows::parse(r, "waiting_session")?))
                })
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn resume_step(&self, id: StepId) -> StoreResult<(Step, Event)> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let id_text = id.to_string();
                let Some(mut step) = load_step(&tx, &id_text)? else {
                    return Err(StoreError::not_found("step", id));
                };
                check_resume(&step, load_decision(&tx, &id_text)?.as_ref())?;
                tx.prepare_cached(
                    "UPDATE steps SET state = 'running', updated_at = ?2 WHERE id = ?1",
                )
                .map_err(backend)?
                .execute(params![id_text, now.as_millis()])
                .map_err(backend)?;
                record_transition(&tx, &id_text, Some(step.state), StepState::Running, now)?;
                step.state = StepState::Running;
                step.updated_at = now;
                let session = session_of(&tx, &step.interaction_id.to_string())?;
                let event = started_event(&tx, &step, session, now)?;
                tx.commit().map_err(backend)?;
                Ok((step, event))
            })
            .await
    }
}
