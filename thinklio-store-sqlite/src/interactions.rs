//! `InteractionStore` and `OutboxStore` on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};
use thinklio_core::event::StepEvent;
use thinklio_core::store::StepEnding;
use thinklio_core::{
    CreatedInteraction, Event, EventKind, FinishedStep, FirstStep, Interaction, InteractionId,
    InteractionStore, NewInteraction, NewOutboxMessage, NewStep, OutboxId, OutboxMessage,
    OutboxStore, Step, StepId, StepOutcome, StepState, StepTransition, StoreError, StoreResult,
    Timestamp,
};

use crate::SqliteStore;
use crate::rows::{
    self, INTERACTION_COLUMNS, OUTBOX_COLUMNS, STEP_COLUMNS, backend, is_unique_violation,
};

/// Appends an event in the current transaction and returns it.
pub(crate) fn append_event(
    tx: &rusqlite::Connection,
    kind: EventKind,
    session_id: Option<String>,
    interaction_id: Option<String>,
    step_id: Option<String>,
    payload: &Value,
    at: Timestamp,
) -> StoreResult<Event> {
    tx.prepare_cached(
        "INSERT INTO events (kind, session_id, interaction_id, step_id, payload, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(backend)?
    .execute(params![kind.as_str(), session_id, interaction_id, step_id, payload.to_string(), at.as_millis()])
    .map_err(backend)?;
    let seq = tx.last_insert_rowid();
    Ok(Event {
        seq,
        kind,
        session_id: parse_id(session_id),
        interaction_id: parse_id(interaction_id),
        step_id: parse_id(step_id),
        payload: payload.clone(),
        at,
    })
}

fn parse_id<T: std::str::FromStr>(s: Option<String>) -> Option<T> {
    s.and_then(|s| s.parse().ok())
}

/// Records a step's change of state; each change takes the next place in
/// the step's history (a step that waited for a decision has more than
/// three).
pub(crate) const TRANSITION: &str = "INSERT INTO step_transitions (step_id, n, from_state, to_state, at) VALUES \
     (?1, (SELECT COALESCE(MAX(n) + 1, 0) FROM step_transitions WHERE step_id = ?1), ?2, ?3, ?4)";

pub(crate) fn record_transition(
    tx: &rusqlite::Connection,
    step: &str,
    from: Option<StepState>,
    to: StepState,
    at: Timestamp,
) -> StoreResult<()> {
    tx.prepare_cached(TRANSITION)
        .map_err(backend)?
        .execute(params![
            step,
            from.map(|s| s.as_str()),
            to.as_str(),
            at.as_millis()
        ])
        .map_err(backend)?;
    Ok(())
}

pub(crate) fn session_of(tx: &rusqlite::Connection, interaction: &str) -> StoreResult<String> {
    tx.prepare_cached("SELECT session_id FROM interactions WHERE id = ?1")
        .map_err(backend)?
        .query_row([interaction], |r| r.get(0))
        .optional()
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("interaction", interaction))
}

pub(crate) fn load_step(c: &rusqlite::Connection, id: &str) -> StoreResult<Option<Step>> {
    c.prepare_cached(&format!("SELECT {STEP_COLUMNS} FROM steps WHERE id = ?1"))
        .map_err(backend)?
        .query_row([id], rows::step)
        .optional()
        .map_err(backend)
}

/// Writes a step as `created` and moves it to `running`, recording both
/// transitions and a `step.started` event, in the caller's transaction.
fn insert_started_step(
    tx: &rusqlite::Connection,
    new: NewStep,
    now: Timestamp,
) -> StoreResult<(Step, Event)> {
    let id = StepId::new();
    let id_text = id.to_string();
    let interaction = new.interaction_id.to_string();
    let session = session_of(tx, &interaction)?;
    tx.prepare_cached(
        "INSERT INTO steps (id, interaction_id, seq, kind, mode, state, attempt, idempotency_key, \
         capability, side_effect, input, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
    )
    .map_err(backend)?
    .execute(params![
        id_text,
        interaction,
        new.seq,
        new.kind.as_str(),
        new.mode.as_str(),
        new.attempt,
        new.idempotency_key,
        new.capability,
        new.side_effect.map(|s| s.as_str()),
        new.input.to_string(),
        now.as_millis(),
    ])
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!(
                "interaction {interaction} already has a step at {}",
                new.seq
            ))
        } else {
            backend(e)
        }
    })?;
    record_transition(tx, &id_text, None, StepState::Created, now)?;
    record_transition(
        tx,
        &id_text,
        Some(StepState::Created),
        StepState::Running,
        now,
    )?;
    let step = new.started(id, now);
    let event = started_event(tx, &step, session, now)?;
    Ok((step, event))
}

/// Appends the `step.started` event of `step` (begun, or running again
/// after a decision) in `session`, in the caller's transaction.
pub(crate) fn started_event(
    tx: &rusqlite::Connection,
    step: &Step,
    session: String,
    now: Timestamp,
) -> StoreResult<Event> {
    append_event(
        tx,
        EventKind::StepStarted,
        Some(session),
        Some(step.interaction_id.to_string()),
        Some(step.id.to_string()),
        &StepEvent::started_of(step).to_json(),
        now,
    )
}

/// Writes an interaction and its `interaction.created` event in the
/// caller's transaction; one with the message's inbound id already in the
/// session is returned as it is, with no event.
fn insert_interaction(
    tx: &rusqlite::Connection,
    new: NewInteraction,
    now: Timestamp,
) -> StoreResult<(Interaction, Option<Event>)> {
    if let Some(inbound) = &new.inbound_id {
        let existing = tx
            .prepare_cached(&format!(
                "SELECT {INTERACTION_COLUMNS} FROM interactions WHERE session_id = ?1 AND inbound_id = ?2"
            ))
            .map_err(backend)?
            .query_row(params![new.session_id.to_string(), inbound], rows::interaction)
            .optional()
            .map_err(backend)?;
        if let Some(i) = existing {
            return Ok((i, None));
        }
    }
    let id = InteractionId::new();
    tx.prepare_cached(
        "INSERT INTO interactions (id, session_id, account_id, team_id, user_id, agent_id, input, \
         inbound_id, parent_interaction_id, delegation_depth, job_id, kind, created_at, images, agent_version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
    .map_err(backend)?
    .execute(params![
        id.to_string(),
        new.session_id.to_string(),
        new.principal.account.to_string(),
        new.principal.team.map(|t| t.to_string()),
        new.principal.user.to_string(),
        new.agent_id.as_str(),
        new.input,
        new.inbound_id,
        new.parent_interaction_id.map(|p| p.to_string()),
        i64::from(new.delegation_depth),
        new.job_id.map(|j| j.to_string()),
        new.kind.as_str(),
        now.as_millis(),
        rows::image_ids_text(&new.images),
        new.agent_version,
    ])
    .map_err(|e| {
        if matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) {
            StoreError::not_found("session", new.session_id)
        } else {
            backend(e)
        }
    })?;
    let seq = tx.last_insert_rowid();
    let event = append_event(
        tx,
        EventKind::InteractionCreated,
        Some(new.session_id.to_string()),
        Some(id.to_string()),
        None,
        &json!({ "parent_interaction_id": new.parent_interaction_id, "delegation_depth": new.delegation_depth }),
        now,
    )?;
    Ok((new.created(id, seq, now), Some(event)))
}

#[async_trait]
impl InteractionStore for SqliteStore {
    async fn create_interaction(
        &self,
        new: NewInteraction,
    ) -> StoreResult<(Interaction, Option<Event>)> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let created = insert_interaction(&tx, new, now)?;
                tx.commit().map_err(backend)?;
                Ok(created)
            })
            .await
    }

    async fn create_interaction_begun(
        &self,
        new: NewInteraction,
        first: FirstStep,
    ) -> StoreResult<CreatedInteraction> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let (interaction, created) = insert_interaction(&tx, new, now)?;
                let first = match created {
                    Some(_) => Some(insert_started_step(&tx, first.of(interaction.id), now)?),
                    None => None,
                };
                tx.commit().map_err(backend)?;
                Ok(CreatedInteraction {
                    interaction,
                    created,
                    first,
                })
            })
            .await
    }

    async fn interaction(&self, id: InteractionId) -> StoreResult<Interaction> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {INTERACTION_COLUMNS} FROM interactions WHERE id = ?1"
                ))
                .map_err(backend)?
                .query_row([id.to_string()], rows::interaction)
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::not_found("interaction", id))
            })
            .await
    }

    async fn interactions_of_session(
        &self,
        session: thinklio_core::SessionId,
    ) -> StoreResult<Vec<Interaction>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {INTERACTION_COLUMNS} FROM interactions WHERE session_id = ?1 ORDER BY seq"
                ))
                .map_err(backend)?
                .query_map([session.to_string()], rows::interaction)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn unfinished_interactions(&self) -> StoreResult<Vec<Interaction>> {
        // The state is derived from the steps here exactly as
        // `InteractionState::derive` does it: finished means a succeeded
        // `respond` step or a failed context/think/respond step that was not
        // merely interrupted.
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {INTERACTION_COLUMNS} FROM interactions i WHERE {} ORDER BY seq",
                    rows::unfinished("i")
                ))
                .map_err(backend)?
                .query_map([], rows::interaction)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn steps(&self, interaction: InteractionId) -> StoreResult<Vec<Step>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {STEP_COLUMNS} FROM steps WHERE interaction_id = ?1 ORDER BY seq"
                ))
                .map_err(backend)?
                .query_map([interaction.to_string()], rows::step)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn step(&self, id: StepId) -> StoreResult<Step> {
        self.conn
            .call(move |c| {
                load_step(c, &id.to_string())?.ok_or_else(|| StoreError::not_found("step", id))
            })
            .await
    }

    async fn begin_step(&self, new: NewStep) -> StoreResult<(Step, Event)> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let begun = insert_started_step(&tx, new, now)?;
                tx.commit().map_err(backend)?;
                Ok(begun)
            })
            .await
    }

    async fn finish_step(
        &self,
        step: &Step,
        outcome: StepOutcome,
        reply: Option<NewOutboxMessage>,
        next: Option<NewStep>,
    ) -> StoreResult<FinishedStep> {
        let now = self.clock.now();
        // The step is read again on the connection's thread, inside the
        // transaction: a read there costs no round trip.
        let id = step.id;
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let id_text = id.to_string();
                let Some(step) = load_step(&tx, &id_text)? else {
                    return Err(StoreError::not_found("step", id));
                };
                let ending = StepEnding::of(&step, outcome)?;
                let (tokens, cost) = (ending.tokens(), ending.cost());
                let interaction = step.interaction_id.to_string();
                tx.prepare_cached(
                    "UPDATE steps SET state = ?3, output = ?4, error_code = ?5, error_message = ?6, model = ?7, \
                     input_tokens = ?8, output_tokens = ?9, cost_nanos = ?10, updated_at = ?11 \
                     WHERE interaction_id = ?1 AND seq = ?2",
                )
                .map_err(backend)?
                .execute(params![
                    interaction,
                    step.seq,
                    ending.to.as_str(),
                    ending.output.as_ref().map(Value::to_string),
                    ending.error.as_ref().map(|e| e.code.as_str()),
                    ending.error.as_ref().map(|e| e.message.as_str()),
                    ending.model(),
                    i64::try_from(tokens.input_tokens).unwrap_or(i64::MAX),
                    i64::try_from(tokens.output_tokens).unwrap_or(i64::MAX),
                    cost.as_nanos(),
                    now.as_millis(),
                ])
                .map_err(backend)?;
                record_transition(&tx, &id_text, Some(step.state), ending.to, now)?;
                if let Some(u) = ending.recorded_usage() {
                    tx.prepare_cached(
                        "INSERT INTO usage_records (step_id, interaction_id, account_id, team_id, user_id, agent_id, \
                         model, input_tokens, output_tokens, cost_nanos, at) \
                         SELECT ?1, id, account_id, team_id, user_id, agent_id, ?3, ?4, ?5, ?6, ?7 \
                         FROM interactions WHERE id = ?2",
                    )
                    .map_err(backend)?
                    .execute(params![
                        id_text,
                        interaction,
                        u.model,
                        i64::try_from(u.tokens.input_tokens).unwrap_or(i64::MAX),
                        i64::try_from(u.tokens.output_tokens).unwrap_or(i64::MAX),
                        u.cost.as_nanos(),
                        now.as_millis(),
                    ])
                    .map_err(backend)?;
                }
                let session = session_of(&tx, &interaction)?;
                let mut events = vec![append_event(
                    &tx,
                    ending.event,
                    Some(session.clone()),
                    Some(interaction.clone()),
                    Some(id_text),
                    &ending.payload,
                    now,
                )?];
                let reply = match reply {
                    None => None,
                    Some(reply) => {
                        let delivered_at = reply.delivered.then_some(now.as_millis());
                        for task in reply.tasks {
                            crate::queue::insert_task(&tx, task, now)?;
                        }
                        let message = tx
                            .prepare_cached(
                                "INSERT INTO outbox (id, interaction_id, session_id, channel, channel_key, text, created_at, \
                                 delivered_at) \
                                 SELECT ?1, i.id, i.session_id, s.channel, s.channel_key, ?3, ?4, ?5 \
                                 FROM interactions i JOIN sessions s ON s.id = i.session_id WHERE i.id = ?2 \
                                 RETURNING id, interaction_id, session_id, channel, channel_key, text, created_at, delivered_at",
                            )
                            .map_err(backend)?
                            .query_row(
                                params![OutboxId::new().to_string(), interaction, reply.text, now.as_millis(), delivered_at],
                                rows::outbox,
                            )
                            .map_err(|e| {
                                if is_unique_violation(&e) {
                                    StoreError::Conflict(format!("interaction {interaction} already has a reply"))
                                } else {
                                    backend(e)
                                }
                            })?;
                        events.push(append_event(
                            &tx,
                            EventKind::InteractionCompleted,
                            Some(session.clone()),
                            Some(interaction.clone()),
                            None,
                            &json!({ "outbox_id": message.id }),
                            now,
                        )?);
                        if reply.delivered {
                            events.push(append_event(
                                &tx,
                                EventKind::ReplyDelivered,
                                Some(session),
                                Some(interaction),
                                None,
                                &json!({ "outbox_id": message.id }),
                                now,
                            )?);
                        }
                        Some(message)
                    }
                };
                let next = match next {
                    None => None,
                    Some(new) => {
                        let (begun, event) = insert_started_step(&tx, new, now)?;
                        events.push(event);
                        Some(begun)
                    }
                };
                tx.commit().map_err(backend)?;
                Ok(FinishedStep {
                    step: ending.apply(step, now),
                    next,
                    reply,
                    events,
                })
            })
            .await
    }

    async fn step_transitions(&self, id: StepId) -> StoreResult<Vec<StepTransition>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(
                    "SELECT from_state, to_state, at FROM step_transitions WHERE step_id = ?1 ORDER BY n",
                )
                .map_err(backend)?
                .query_map([id.to_string()], |r| {
                    Ok(StepTransition {
                        step_id: id,
                        from: rows::parse_opt(r, "from_state")?,
                        to: rows::parse(r, "to_state")?,
                        at: rows::ts(r, "at")?,
                    })
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn undelivered(&self) -> StoreResult<Vec<OutboxMessage>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE delivered_at IS NULL ORDER BY created_at, id"
                ))
                .map_err(backend)?
                .query_map([], rows::outbox)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn reply_of(&self, interaction: InteractionId) -> StoreResult<Option<OutboxMessage>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE interaction_id = ?1"
                ))
                .map_err(backend)?
                .query_row([interaction.to_string()], rows::outbox)
                .optional()
                .map_err(backend)
            })
            .await
    }

    async fn mark_delivered(&self, id: OutboxId, at: Timestamp) -> StoreResult<Option<Event>> {
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let row: Option<(String, String)> = tx
                    .prepare_cached("SELECT interaction_id, session_id FROM outbox WHERE id = ?1")
                    .map_err(backend)?
                    .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(backend)?;
                let Some((interaction, session)) = row else {
                    return Err(StoreError::not_found("outbox message", id));
                };
                let changed = tx
                    .prepare_cached("UPDATE outbox SET delivered_at = ?2 WHERE id = ?1 AND delivered_at IS NULL")
                    .map_err(backend)?
                    .execute(params![id.to_string(), at.as_millis()])
                    .map_err(backend)?;
                let event = if changed == 1 {
                    Some(append_event(
                        &tx,
                        EventKind::ReplyDelivered,
                        Some(session),
                        Some(interaction),
                        None,
                        &json!({ "outbox_id": id }),
                        at,
                    )?)
                } else {
                    None
                };
                tx.commit().map_err(backend)?;
                Ok(event)
            })
            .await
    }
}
