//! `InteractionStore` and `OutboxStore` on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use serde_json::{Value, json};
use thinklio_core::event::StepEvent;
use thinklio_core::store::StepEnding;
use thinklio_core::{
    Event, EventKind, FinishedStep, Interaction, InteractionId, InteractionStore, NewInteraction,
    NewOutboxMessage, NewStep, OutboxId, OutboxMessage, OutboxStore, Step, StepId, StepOutcome,
    StepState, StepTransition, StoreError, StoreResult, Timestamp,
};
use tokio_postgres::Statement;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::PostgresStore;
use crate::rows::{
    self, INTERACTION_COLUMNS, OUTBOX_COLUMNS, STEP_COLUMNS, append_event, backend, big, execute,
    query, query_opt,
};

pub(crate) async fn record_transition(
    tx: &Transaction<'_>,
    step: &str,
    from: Option<StepState>,
    to: StepState,
    at: Timestamp,
) -> StoreResult<()> {
    let statement = tx.prepare_cached(TRANSITION).await.map_err(backend)?;
    transition_prepared(tx, &statement, step, from, to, at).await
}

/// The statement of a step's transition. Each change takes the next place
/// in the step's history (a step that waited for a decision has more than
/// three); the step's row is locked.
const TRANSITION: &str = "INSERT INTO step_transitions (step_id, n, from_state, to_state, at) VALUES \
     ($1, (SELECT COALESCE(MAX(n) + 1, 0) FROM step_transitions WHERE step_id = $1), $2, $3, $4)";

/// Records a transition with the prepared [`TRANSITION`]; sent when first
/// polled, as [`append_prepared`](crate::rows::append_prepared) is.
async fn transition_prepared(
    tx: &Transaction<'_>,
    statement: &Statement,
    step: &str,
    from: Option<StepState>,
    to: StepState,
    at: Timestamp,
) -> StoreResult<()> {
    tx.execute(
        statement,
        &[
            &step,
            &from.map(|s| s.as_str()),
            &to.as_str(),
            &at.as_millis(),
        ],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

pub(crate) async fn session_of(tx: &Transaction<'_>, interaction: &str) -> StoreResult<String> {
    let row = query_opt(
        tx,
        "SELECT session_id FROM interactions WHERE id = $1",
        &[&interaction],
    )
    .await?
    .ok_or_else(|| StoreError::not_found("interaction", interaction))?;
    rows::get(&row, "session_id")
}

pub(crate) async fn load_step(
    tx: &Transaction<'_>,
    id: &str,
    lock: bool,
) -> StoreResult<Option<Step>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    query_opt(
        tx,
        &format!("SELECT {STEP_COLUMNS} FROM steps WHERE id = $1{lock}"),
        &[&id],
    )
    .await?
    .map(|r| rows::step(&r))
    .transpose()
}

/// The step `id`, locked for this transaction, and its interaction's session.
async fn lock_step(tx: &Transaction<'_>, id: &str) -> StoreResult<Option<(Step, String)>> {
    let Some(row) = query_opt(
        tx,
        &format!(
            "SELECT {STEP_COLUMNS}, (SELECT i.session_id FROM interactions i \
             WHERE i.id = steps.interaction_id) AS step_session \
             FROM steps WHERE id = $1 FOR UPDATE"
        ),
        &[&id],
    )
    .await?
    else {
        return Ok(None);
    };
    let session: Option<String> = rows::get(&row, "step_session")?;
    let session =
        session.ok_or_else(|| StoreError::Corrupt(format!("step {id} has no interaction")))?;
    Ok(Some((rows::step(&row)?, session)))
}

/// Writes a step as `created` and moves it to `running`, recording both
/// transitions and a `step.started` event, in the caller's transaction;
/// `session` is its interaction's, when the caller has read it already.
///
/// The four writes go to the server together and are answered together
/// (tokio-postgres pipelines requests made at once on one connection): one
/// round trip instead of four. They run in order; a step already at its
/// place writes no row, and then the whole transaction is given up.
async fn insert_started_step(
    tx: &Transaction<'_>,
    new: NewStep,
    now: Timestamp,
    session: Option<String>,
) -> StoreResult<(Step, Event)> {
    let id = StepId::new();
    let id_text = id.to_string();
    let interaction = new.interaction_id.to_string();
    let session = match session {
        Some(session) => session,
        None => session_of(tx, &interaction).await?,
    };
    let step = new.started(id, now);
    // Prepared first (cached per connection, so usually no round trip):
    // a statement still being prepared would send its request late.
    let insert = tx
        .prepare_cached(
            "INSERT INTO steps (id, interaction_id, seq, kind, mode, state, attempt, idempotency_key, \
             capability, side_effect, input, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8, $9, $10, $11, $11) \
             ON CONFLICT (interaction_id, seq) DO NOTHING",
        )
        .await
        .map_err(backend)?;
    let transition = tx.prepare_cached(TRANSITION).await.map_err(backend)?;
    let event = rows::event_statement(tx).await?;
    let (seq, attempt) = (i64::from(step.seq), i64::from(step.attempt));
    let (kind, mode) = (step.kind.as_str(), step.mode.as_str());
    let side_effect = step.side_effect.map(|s| s.as_str());
    let (input, at) = (step.input.to_string(), now.as_millis());
    let row: [&(dyn ToSql + Sync); 11] = [
        &id_text,
        &interaction,
        &seq,
        &kind,
        &mode,
        &attempt,
        &step.idempotency_key,
        &step.capability,
        &side_effect,
        &input,
        &at,
    ];
    let (inserted, created, running, started) = tokio::join!(
        tx.execute(&insert, &row),
        transition_prepared(tx, &transition, &id_text, None, StepState::Created, now),
        transition_prepared(
            tx,
            &transition,
            &id_text,
            Some(StepState::Created),
            StepState::Running,
            now,
        ),
        started_prepared(tx, &event, &step, session, now),
    );
    if inserted.map_err(backend)? == 0 {
        return Err(StoreError::Conflict(format!(
            "interaction {interaction} already has a step at {}",
            step.seq
        )));
    }
    created?;
    running?;
    Ok((step, started?))
}

/// Appends the `step.started` event of `step` (begun, or running again
/// after a decision) in `session`, in the caller's transaction.
pub(crate) async fn started_event(
    tx: &Transaction<'_>,
    step: &Step,
    session: String,
    now: Timestamp,
) -> StoreResult<Event> {
    let statement = rows::event_statement(tx).await?;
    started_prepared(tx, &statement, step, session, now).await
}

/// [`started_event`] with the event's statement prepared.
async fn started_prepared(
    tx: &Transaction<'_>,
    statement: &Statement,
    step: &Step,
    session: String,
    now: Timestamp,
) -> StoreResult<Event> {
    rows::append_prepared(
        tx,
        statement,
        EventKind::StepStarted,
        [
            Some(session),
            Some(step.interaction_id.to_string()),
            Some(step.id.to_string()),
        ],
        &StepEvent::started_of(step).to_json(),
        now,
    )
    .await
}

#[async_trait]
impl InteractionStore for PostgresStore {
    async fn create_interaction(
        &self,
        new: NewInteraction,
    ) -> StoreResult<(Interaction, Option<Event>)> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let id = InteractionId::new();
        let statement = tx
            .prepare_cached(
                "INSERT INTO interactions (id, session_id, account_id, team_id, user_id, agent_id, input, \
                 inbound_id, parent_interaction_id, delegation_depth, job_id, kind, created_at, images, agent_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (session_id, inbound_id) WHERE inbound_id IS NOT NULL DO NOTHING RETURNING seq",
            )
            .await
            .map_err(backend)?;
        let inserted = tx
            .query_opt(
                &statement,
                &[
                    &id.to_string(),
                    &new.session_id.to_string(),
                    &new.principal.account.to_string(),
                    &new.principal.team.map(|t| t.to_string()),
                    &new.principal.user.to_string(),
                    &new.agent_id.as_str(),
                    &new.input,
                    &new.inbound_id,
                    &new.parent_interaction_id.map(|p| p.to_string()),
                    &i64::from(new.delegation_depth),
                    &new.job_id.map(|j| j.to_string()),
                    &new.kind.as_str(),
                    &now.as_millis(),
                    &rows::image_ids_text(&new.images),
                    &new.agent_version.map(i64::from),
                ],
            )
            .await
            .map_err(|e| {
                if rows::is(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
                    StoreError::not_found("session", new.session_id)
                } else {
                    backend(e)
                }
            })?;
        let Some(row) = inserted else {
            // The same inbound id in this session: the interaction that has it.
            let row = query_opt(
                &tx,
                &format!(
                    "SELECT {INTERACTION_COLUMNS} FROM interactions WHERE session_id = $1 AND inbound_id = $2"
                ),
                &[&new.session_id.to_string(), &new.inbound_id],
            )
            .await?
            .ok_or_else(|| StoreError::Conflict("the interaction could not be created".into()))?;
            return Ok((rows::interaction(&row)?, None));
        };
        let seq: i64 = rows::get(&row, "seq")?;
        rows::signal(&tx, &self.channel).await?;
        let event = append_event(
            &tx,
            EventKind::InteractionCreated,
            Some(new.session_id.to_string()),
            Some(id.to_string()),
            None,
            &json!({ "parent_interaction_id": new.parent_interaction_id, "delegation_depth": new.delegation_depth }),
            now,
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok((new.created(id, seq, now), Some(event)))
    }

    async fn interaction(&self, id: InteractionId) -> StoreResult<Interaction> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let row = query_opt(
            &tx,
            &format!("SELECT {INTERACTION_COLUMNS} FROM interactions WHERE id = $1"),
            &[&id.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("interaction", id))?;
        rows::interaction(&row)
    }

    async fn interactions_of_session(
        &self,
        session: thinklio_core::SessionId,
    ) -> StoreResult<Vec<Interaction>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        query(
            &tx,
            &format!(
                "SELECT {INTERACTION_COLUMNS} FROM interactions WHERE session_id = $1 ORDER BY seq"
            ),
            &[&session.to_string()],
        )
        .await?
        .iter()
        .map(rows::interaction)
        .collect()
    }

    async fn unfinished_interactions(&self) -> StoreResult<Vec<Interaction>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        query(
            &tx,
            &format!(
                "SELECT {INTERACTION_COLUMNS} FROM interactions i WHERE {} ORDER BY seq",
                rows::unfinished("i")
            ),
            &[],
        )
        .await?
        .iter()
        .map(rows::interaction)
        .collect()
    }

    async fn unfinished_in_session(
        &self,
        session: thinklio_core::SessionId,
    ) -> StoreResult<Vec<Interaction>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        query(
            &tx,
            &format!(
                "SELECT {INTERACTION_COLUMNS} FROM interactions i WHERE i.session_id = $1 \
                 AND i.parent_interaction_id IS NULL AND {} ORDER BY seq",
                rows::unfinished("i")
            ),
            &[&session.to_string()],
        )
        .await?
        .iter()
        .map(rows::interaction)
        .collect()
    }

    async fn steps(&self, interaction: InteractionId) -> StoreResult<Vec<Step>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        query(
            &tx,
            &format!("SELECT {STEP_COLUMNS} FROM steps WHERE interaction_id = $1 ORDER BY seq"),
            &[&interaction.to_string()],
        )
        .await?
        .iter()
        .map(rows::step)
        .collect()
    }

    async fn step(&self, id: StepId) -> StoreResult<Step> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        load_step(&tx, &id.to_string(), false)
            .await?
            .ok_or_else(|| StoreError::not_found("step", id))
    }

    async fn begin_step(&self, new: NewStep) -> StoreResult<(Step, Event)> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let begun = insert_started_step(&tx, new, now, None).await?;
        tx.commit().await.map_err(backend)?;
        Ok(begun)
    }

    async fn finish_step(
        &self,
        id: StepId,
        outcome: StepOutcome,
        reply: Option<NewOutboxMessage>,
        next: Option<NewStep>,
    ) -> StoreResult<FinishedStep> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let id_text = id.to_string();
        let Some((step, session)) = lock_step(&tx, &id_text).await? else {
            return Err(StoreError::not_found("step", id));
        };
        let ending = StepEnding::of(&step, outcome)?;
        let (tokens, cost) = (ending.tokens(), ending.cost());
        let interaction = step.interaction_id.to_string();
        let update = tx
            .prepare_cached(
                "UPDATE steps SET state = $2, output = $3, error_code = $4, error_message = $5, model = $6, \
                 input_tokens = $7, output_tokens = $8, cost_nanos = $9, updated_at = $10 WHERE id = $1",
            )
            .await
            .map_err(backend)?;
        let record_usage = tx
            .prepare_cached(
                "INSERT INTO usage_records (step_id, interaction_id, account_id, team_id, user_id, agent_id, \
                 model, input_tokens, output_tokens, cost_nanos, at) \
                 SELECT $1, id, account_id, team_id, user_id, agent_id, $3, $4, $5, $6, $7 \
                 FROM interactions WHERE id = $2",
            )
            .await
            .map_err(backend)?;
        let transition = tx.prepare_cached(TRANSITION).await.map_err(backend)?;
        let event = rows::event_statement(&tx).await?;
        let usage = ending.recorded_usage();
        let output = ending.output.as_ref().map(Value::to_string);
        // The step's end, its transition, its usage and its event go to the
        // server together: one round trip (see `insert_started_step`).
        let to = ending.to.as_str();
        let code = ending.error.as_ref().map(|e| e.code.as_str());
        let message = ending.error.as_ref().map(|e| e.message.as_str());
        let model = ending.model();
        let (input_tokens, output_tokens) = (big(tokens.input_tokens), big(tokens.output_tokens));
        let (cost_nanos, at) = (cost.as_nanos(), now.as_millis());
        let ended_row: [&(dyn ToSql + Sync); 10] = [
            &id_text,
            &to,
            &output,
            &code,
            &message,
            &model,
            &input_tokens,
            &output_tokens,
            &cost_nanos,
            &at,
        ];
        let (updated, transitioned, used, ended) = tokio::join!(
            tx.execute(&update, &ended_row),
            transition_prepared(&tx, &transition, &id_text, Some(step.state), ending.to, now),
            async {
                let Some(u) = &usage else {
                    return Ok(());
                };
                let (input, output) = (big(u.tokens.input_tokens), big(u.tokens.output_tokens));
                let nanos = u.cost.as_nanos();
                let usage_row: [&(dyn ToSql + Sync); 7] = [
                    &id_text,
                    &interaction,
                    &u.model,
                    &input,
                    &output,
                    &nanos,
                    &at,
                ];
                tx.execute(&record_usage, &usage_row).await.map(|_| ())
            },
            rows::append_prepared(
                &tx,
                &event,
                ending.event,
                [
                    Some(session.clone()),
                    Some(interaction.clone()),
                    Some(id_text.clone()),
                ],
                &ending.payload,
                now,
            ),
        );
        updated.map_err(backend)?;
        transitioned?;
        used.map_err(backend)?;
        let mut events = vec![ended?];
        let reply = match reply {
            None => None,
            Some(reply) => {
                let delivered_at = reply.delivered.then_some(now.as_millis());
                for task in reply.tasks {
                    crate::queue::insert_task(&tx, &self.channel, task, now).await?;
                }
                let statement = tx
                    .prepare_cached(
                        "INSERT INTO outbox (id, interaction_id, session_id, channel, channel_key, text, created_at, \
                         delivered_at) \
                         SELECT $1, i.id, i.session_id, s.channel, s.channel_key, $3, $4, $5 \
                         FROM interactions i JOIN sessions s ON s.id = i.session_id WHERE i.id = $2 \
                         ON CONFLICT (interaction_id) DO NOTHING \
                         RETURNING id, interaction_id, session_id, channel, channel_key, text, created_at, delivered_at",
                    )
                    .await
                    .map_err(backend)?;
                let row = tx
                    .query_opt(
                        &statement,
                        &[
                            &OutboxId::new().to_string(),
                            &interaction,
                            &reply.text,
                            &now.as_millis(),
                            &delivered_at,
                        ],
                    )
                    .await
                    .map_err(backend)?
                    .ok_or_else(|| {
                        StoreError::Conflict(format!(
                            "interaction {interaction} already has a reply"
                        ))
                    })?;
                let message = rows::outbox(&row)?;
                events.push(
                    append_event(
                        &tx,
                        EventKind::InteractionCompleted,
                        Some(session.clone()),
                        Some(interaction.clone()),
                        None,
                        &json!({ "outbox_id": message.id }),
                        now,
                    )
                    .await?,
                );
                if reply.delivered {
                    events.push(
                        append_event(
                            &tx,
                            EventKind::ReplyDelivered,
                            Some(session.clone()),
                            Some(interaction),
                            None,
                            &json!({ "outbox_id": message.id }),
                            now,
                        )
                        .await?,
                    );
                }
                Some(message)
            }
        };
        let next = match next {
            None => None,
            Some(new) => {
                let (begun, event) =
                    insert_started_step(&tx, new, now, Some(session.clone())).await?;
                events.push(event);
                Some(begun)
            }
        };
        tx.commit().await.map_err(backend)?;
        Ok(FinishedStep {
            step: ending.apply(step, now),
            next,
            reply,
            events,
        })
    }

    async fn step_transitions(&self, id: StepId) -> StoreResult<Vec<StepTransition>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        query(
            &tx,
            "SELECT from_state, to_state, at FROM step_transitions WHERE step_id = $1 ORDER BY n",
            &[&id.to_string()],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(StepTransition {
                step_id: id,
                from: rows::parse_opt(r, "from_state")?,
                to: rows::parse(r, "to_state")?,
                at: rows::ts(r, "at")?,
            })
        })
        .collect()
    }

    async fn announce_cancel(&self, interaction: InteractionId) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[
                    &&*self.channel,
                    &format!("{}{interaction}", crate::listen::CANCEL),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn cancel_announcements(&self) -> Option<tokio::sync::broadcast::Receiver<InteractionId>> {
        Some(self.cancels.subscribe())
    }
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn undelivered(&self) -> StoreResult<Vec<OutboxMessage>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        query(
            &tx,
            &format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE delivered_at IS NULL ORDER BY created_at, id"
            ),
            &[],
        )
        .await?
        .iter()
        .map(rows::outbox)
        .collect()
    }

    async fn reply_of(&self, interaction: InteractionId) -> StoreResult<Option<OutboxMessage>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        query_opt(
            &tx,
            &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE interaction_id = $1"),
            &[&interaction.to_string()],
        )
        .await?
        .map(|r| rows::outbox(&r))
        .transpose()
    }

    async fn mark_delivered(&self, id: OutboxId, at: Timestamp) -> StoreResult<Option<Event>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let row = query_opt(
            &tx,
            "SELECT interaction_id, session_id FROM outbox WHERE id = $1",
            &[&id.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("outbox message", id))?;
        let interaction: String = rows::get(&row, "interaction_id")?;
        let session: String = rows::get(&row, "session_id")?;
        let changed = execute(
            &tx,
            "UPDATE outbox SET delivered_at = $2 WHERE id = $1 AND delivered_at IS NULL",
            &[&id.to_string(), &at.as_millis()],
        )
        .await?;
        let event = if changed == 1 {
            Some(
                append_event(
                    &tx,
                    EventKind::ReplyDelivered,
                    Some(session),
                    Some(interaction),
                    None,
                    &json!({ "outbox_id": id }),
                    at,
                )
                .await?,
            )
        } else {
            None
        };
        tx.commit().await.map_err(backend)?;
        Ok(event)
    }
}
