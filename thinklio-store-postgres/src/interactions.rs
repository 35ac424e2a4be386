//! `InteractionStore` and `OutboxStore` on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use serde_json::json;
use thinklio_core::event::StepEvent;
use thinklio_core::store::StepEnding;
use thinklio_core::{
    CreatedInteraction, Event, EventKind, FinishedStep, FirstStep, Interaction, InteractionId,
    InteractionStore, NewInteraction, NewOutboxMessage, NewStep, OutboxId, OutboxMessage,
    OutboxStore, Step, StepId, StepOutcome, StepState, StepTransition, StoreError, StoreResult,
    Timestamp,
};

use crate::PostgresStore;
use crate::rows::{
    self, INTERACTION_COLUMNS, OUTBOX_COLUMNS, STEP_COLUMNS, append_event, backend, execute, query,
    query_opt,
};
use crate::steps::{Begun, Pending, begin, write_ending};

/// Records a change of a step's state, in the caller's transaction, which
/// holds the step's row locked: each change takes the next place in the
/// step's history (a step that waited for a decision has more than three).
pub(crate) async fn record_transition(
    tx: &impl GenericClient,
    step: &str,
    from: Option<StepState>,
    to: StepState,
    at: Timestamp,
) -> StoreResult<()> {
    execute(
        tx,
        "INSERT INTO step_transitions (step_id, n, from_state, to_state, at) VALUES \
         ($1, (SELECT COALESCE(MAX(n) + 1, 0) FROM step_transitions WHERE step_id = $1), $2, $3, $4)",
        &[
            &step,
            &from.map(|s| s.as_str()),
            &to.as_str(),
            &at.as_millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn session_of(tx: &impl GenericClient, interaction: &str) -> StoreResult<String> {
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
    tx: &impl GenericClient,
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

/// Appends the `step.started` event of `step` (begun, or running again
/// after a decision) in `session`, in the caller's transaction.
pub(crate) async fn started_event(
    tx: &impl GenericClient,
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
    .await
}

#[async_trait]
impl InteractionStore for PostgresStore {
    async fn create_interaction(
        &self,
        new: NewInteraction,
    ) -> StoreResult<(Interaction, Option<Event>)> {
        let c = self.create(new, None).await?;
        Ok((c.interaction, c.created))
    }

    async fn create_interaction_begun(
        &self,
        new: NewInteraction,
        first: FirstStep,
    ) -> StoreResult<CreatedInteraction> {
        self.create(new, Some(first)).await
    }

    async fn interaction(&self, id: InteractionId) -> StoreResult<Interaction> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
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
        let client = self.client().await?;
        query(
            &client,
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
        let client = self.client().await?;
        query(
            &client,
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
        let client = self.client().await?;
        query(
            &client,
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
        let client = self.client().await?;
        query(
            &client,
            &format!("SELECT {STEP_COLUMNS} FROM steps WHERE interaction_id = $1 ORDER BY seq"),
            &[&interaction.to_string()],
        )
        .await?
        .iter()
        .map(rows::step)
        .collect()
    }

    async fn step(&self, id: StepId) -> StoreResult<Step> {
        let client = self.client().await?;
        load_step(&client, &id.to_string(), false)
            .await?
            .ok_or_else(|| StoreError::not_found("step", id))
    }

    async fn begin_step(&self, new: NewStep) -> StoreResult<(Step, Event)> {
        let now = self.clock.now();
        let client = self.client().await?;
        begin(&client, Begun::new(new, now), now).await
    }

    async fn finish_step(
        &self,
        held: &Step,
        outcome: StepOutcome,
        reply: Option<NewOutboxMessage>,
        next: Option<NewStep>,
    ) -> StoreResult<FinishedStep> {
        let now = self.clock.now();
        let next = next.map(|n| Begun::new(n, now));
        // The ending worked out from the state the caller holds: one
        // statement. When the state stored is another, a transaction that
        // reads and locks the step first.
        if !held.state.can_become(outcome.state()) {
            return self
                .finish_locked(held.id, Pending::Outcome(outcome), reply, next, now)
                .await;
        }
        let ending = StepEnding::of(held, outcome)?;
        let client = self.client().await?;
        let written = write_ending(&client, &self.channel, held, ending, reply, next, now).await?;
        drop(client);
        match written {
            Ok(finished) => Ok(finished),
            Err(parts) => {
                let pending = Pending::Ending(parts.ending);
                self.finish_locked(held.id, pending, parts.reply, parts.next, now)
                    .await
            }
        }
    }

    async fn step_transitions(&self, id: StepId) -> StoreResult<Vec<StepTransition>> {
        let client = self.client().await?;
        query(
            &client,
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
        let client = self.client().await?;
        query(
            &client,
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
        let client = self.client().await?;
        query_opt(
            &client,
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
