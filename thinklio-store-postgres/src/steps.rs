//! The statements that write a step whole, each one statement of
//! data-modifying CTEs: an interaction created with its first step
//! ([`CREATE_BEGUN`]), a step begun ([`BEGIN_STEP`]) and a step ended with
//! all that goes with it ([`FINISH_STEP`]). Alone on a connection each is a
//! transaction of its own; a caller that must lock the step first runs it
//! inside its transaction.

use std::sync::LazyLock;

use deadpool_postgres::GenericClient;
use serde_json::{Value, json};
use thinklio_core::event::StepEvent;
use thinklio_core::store::StepEnding;
use thinklio_core::{
    CreatedInteraction, Event, EventKind, FinishedStep, FirstStep, InteractionId, NewInteraction,
    NewOutboxMessage, NewStep, NewTask, OutboxId, Step, StepId, StepOutcome, StepState, StoreError,
    StoreResult, Timestamp,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::PostgresStore;
use crate::interactions::load_step;
use crate::rows::{self, INTERACTION_COLUMNS, backend, big, query_opt};

/// The part of [`BEGIN_STEP`], [`FINISH_STEP`] and [`CREATE_BEGUN`] that
/// writes a step begun (`$p`..`$p+9` its row, `$p+10` the time, where `p`
/// is `first`) with its two transitions, when `owner` (the interaction) has
/// a row; `$p` NULL writes none.
fn begun_ctes(first: usize) -> String {
    let (created, running) = (StepState::Created.as_str(), StepState::Running.as_str());
    let [
        id,
        interaction,
        seq,
        kind,
        mode,
        attempt,
        key,
        capability,
        side_effect,
        input,
        at,
    ]: [usize; 11] = std::array::from_fn(|i| first + i);
    format!(
        "begun AS (INSERT INTO steps (id, interaction_id, seq, kind, mode, state, attempt, idempotency_key, \
         capability, side_effect, input, created_at, updated_at) \
         SELECT ${id}::TEXT, ${interaction}::TEXT, ${seq}::BIGINT, ${kind}::TEXT, ${mode}::TEXT, '{running}', \
         ${attempt}::BIGINT, ${key}::TEXT, ${capability}::TEXT, ${side_effect}::TEXT, ${input}::TEXT, \
         ${at}::BIGINT, ${at}::BIGINT FROM owner WHERE ${id}::TEXT IS NOT NULL RETURNING id), \
         began AS (INSERT INTO step_transitions (step_id, n, from_state, to_state, at) \
         SELECT begun.id, t.n, t.from_state, t.to_state, ${at}::BIGINT FROM begun, \
         (VALUES (0::BIGINT, NULL::TEXT, '{created}'), (1::BIGINT, '{created}', '{running}')) AS t (n, from_state, to_state))"
    )
}

/// The interaction's row (`$1`..`$15`), unless the session has its inbound
/// id already.
const MAKE_INTERACTION: &str = "made AS (INSERT INTO interactions (id, session_id, account_id, team_id, user_id, \
     agent_id, input, inbound_id, parent_interaction_id, delegation_depth, job_id, kind, created_at, images, \
     agent_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT (session_id, inbound_id) WHERE inbound_id IS NOT NULL DO NOTHING RETURNING id, session_id, seq)";

/// Creates an interaction in one statement, a transaction of its own: its
/// row, its `interaction.created` event (`$16` kind, `$17` payload) and the
/// announcement of new work on channel `$18`. Its place comes back NULL
/// when the session has the message's inbound id already.
static CREATE_INTERACTION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {MAKE_INTERACTION}, \
         logged AS (INSERT INTO events (kind, session_id, interaction_id, step_id, payload, at) \
         SELECT $16::TEXT, session_id, id, NULL, $17::TEXT, $13::BIGINT FROM made RETURNING seq), \
         signalled AS (SELECT pg_notify($18::TEXT, '') FROM made) \
         SELECT (SELECT seq FROM made) AS seq, (SELECT seq FROM logged) AS event, \
         (SELECT count(*) FROM signalled) AS signalled"
    )
});

/// [`CREATE_INTERACTION`] with the interaction's first step begun
/// (`$19`..`$29` as [`begun_ctes`] reads them) and its `step.started` event
/// (`$30` kind, `$31` payload), logged after the interaction's.
static CREATE_BEGUN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {MAKE_INTERACTION}, owner AS (SELECT id, session_id FROM made), {}, \
         logged AS (INSERT INTO events (kind, session_id, interaction_id, step_id, payload, at) \
         SELECT e.kind, owner.session_id, owner.id, e.step, e.payload, $13::BIGINT FROM owner, \
         (VALUES (0, $16::TEXT, NULL::TEXT, $17::TEXT), (1, $30::TEXT, $19::TEXT, $31::TEXT)) \
         AS e (ord, kind, step, payload) ORDER BY e.ord RETURNING seq, kind), \
         signalled AS (SELECT pg_notify($18::TEXT, '') FROM made) \
         SELECT (SELECT seq FROM made) AS seq, (SELECT seq FROM logged WHERE kind = $16::TEXT) AS event, \
         (SELECT seq FROM logged WHERE kind = $30::TEXT) AS started, (SELECT count(*) FROM signalled) AS signalled",
        begun_ctes(19)
    )
});

/// Begins a step in one statement: its row, both transitions and its
/// `step.started` event (`$12` its kind, `$13` its payload). Returns the
/// interaction's session (NULL when it has no row) and the event's place.
static BEGIN_STEP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH owner AS (SELECT id, session_id FROM interactions WHERE id = $2::TEXT), {}, \
         logged AS (INSERT INTO events (kind, session_id, interaction_id, step_id, payload, at) \
         SELECT $12::TEXT, owner.session_id, owner.id, begun.id, $13::TEXT, $11::BIGINT FROM owner, begun \
         RETURNING seq) \
         SELECT (SELECT session_id FROM owner) AS session, (SELECT seq FROM logged) AS started",
        begun_ctes(1)
    )
});

/// Ends a step in one statement, a transaction of its own, with all that
/// goes with it: the step's row (`$14` its id, only while its state is
/// still `$15`; `$16`..`$23` its ending), its transition, its usage
/// (`$24`..`$27`, none when `$24` is NULL) and its event (`$28` kind, `$29`
/// payload); the reply (`$30` its id, none when NULL; `$31` text, `$32`
/// delivered at), the tasks that go with it (`$36`..`$42`, one array per
/// column, announced on channel `$43`) and its events (`$33` and `$35` the
/// kinds of `interaction.completed` and `reply.delivered`, NULL when not
/// written; `$34` their payload); and the next step, as [`BEGIN_STEP`]
/// writes one (`$12` NULL when there is none). A state other than `$15`
/// matches no row and writes nothing: then the session comes back NULL.
static FINISH_STEP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH ended AS (UPDATE steps SET state = $16::TEXT, output = $17::TEXT, error_code = $18::TEXT, \
         error_message = $19::TEXT, model = $20::TEXT, input_tokens = $21::BIGINT, output_tokens = $22::BIGINT, \
         cost_nanos = $23::BIGINT, updated_at = $11::BIGINT WHERE id = $14::TEXT AND state = $15::TEXT \
         RETURNING id, interaction_id), \
         owner AS (SELECT i.id, i.session_id, i.account_id, i.team_id, i.user_id, i.agent_id \
         FROM interactions i JOIN ended ON i.id = ended.interaction_id), \
         moved AS (INSERT INTO step_transitions (step_id, n, from_state, to_state, at) \
         SELECT ended.id, (SELECT COALESCE(MAX(n) + 1, 0) FROM step_transitions WHERE step_id = $14::TEXT), \
         $15::TEXT, $16::TEXT, $11::BIGINT FROM ended), \
         used AS (INSERT INTO usage_records (step_id, interaction_id, account_id, team_id, user_id, agent_id, \
         model, input_tokens, output_tokens, cost_nanos, at) \
         SELECT $14::TEXT, id, account_id, team_id, user_id, agent_id, $24::TEXT, $25::BIGINT, $26::BIGINT, \
         $27::BIGINT, $11::BIGINT FROM owner WHERE $24::TEXT IS NOT NULL), \
         replied AS (INSERT INTO outbox (id, interaction_id, session_id, channel, channel_key, text, created_at, \
         delivered_at) SELECT $30::TEXT, owner.id, owner.session_id, s.channel, s.channel_key, $31::TEXT, \
         $11::BIGINT, $32::BIGINT FROM owner JOIN sessions s ON s.id = owner.session_id WHERE $30::TEXT IS NOT NULL \
         RETURNING id, interaction_id, session_id, channel, channel_key, text, created_at, delivered_at), \
         queued AS (INSERT INTO tasks (id, kind, payload, state, attempts, max_attempts, run_at, created_at, \
         updated_at, owner_account, owner_user) \
         SELECT t.id, t.kind, t.payload, 'pending', 0, t.max_attempts, t.run_at, $11::BIGINT, $11::BIGINT, \
         t.owner_account, t.owner_user FROM owner, \
         unnest($36::TEXT[], $37::TEXT[], $38::TEXT[], $39::BIGINT[], $40::BIGINT[], $41::TEXT[], $42::TEXT[]) \
         AS t (id, kind, payload, max_attempts, run_at, owner_account, owner_user) RETURNING id), \
         signalled AS (SELECT pg_notify($43::TEXT, '') FROM (SELECT 1 FROM queued LIMIT 1) AS any_task), \
         {}, \
         logged AS (INSERT INTO events (kind, session_id, interaction_id, step_id, payload, at) \
         SELECT e.kind, owner.session_id, COALESCE(e.interaction, owner.id), e.step, e.payload, $11::BIGINT \
         FROM owner, (VALUES (0, $28::TEXT, NULL::TEXT, $14::TEXT, $29::TEXT), \
         (1, $33::TEXT, NULL::TEXT, NULL::TEXT, $34::TEXT), (2, $35::TEXT, NULL::TEXT, NULL::TEXT, $34::TEXT), \
         (3, $12::TEXT, $2::TEXT, $1::TEXT, $13::TEXT)) AS e (ord, kind, interaction, step, payload) \
         WHERE e.kind IS NOT NULL ORDER BY e.ord RETURNING seq, kind) \
         SELECT w.*, r.id, r.interaction_id, r.session_id, r.channel, r.channel_key, r.text, r.created_at, \
         r.delivered_at FROM (SELECT (SELECT session_id FROM owner) AS session, \
         (SELECT seq FROM logged WHERE kind = $28::TEXT) AS ended, \
         (SELECT seq FROM logged WHERE kind = $33::TEXT) AS completed, \
         (SELECT seq FROM logged WHERE kind = $35::TEXT) AS delivered, \
         (SELECT seq FROM logged WHERE kind = $12::TEXT) AS started, \
         (SELECT count(*) FROM signalled) AS signalled) AS w LEFT JOIN replied r ON TRUE",
        begun_ctes(1)
    )
});

/// A step to begin, as the statements that begin one take it: its row (the
/// parameters [`begun_ctes`] reads) and its `step.started` event's payload.
pub(crate) struct Begun {
    step: Step,
    id: String,
    interaction: String,
    seq: i64,
    kind: &'static str,
    mode: &'static str,
    attempt: i64,
    side_effect: Option<&'static str>,
    input: String,
    payload: Value,
    payload_text: String,
}

impl Begun {
    pub(crate) fn new(new: NewStep, now: Timestamp) -> Self {
        let step = new.started(StepId::new(), now);
        let payload = StepEvent::started_of(&step).to_json();
        Self {
            id: step.id.to_string(),
            interaction: step.interaction_id.to_string(),
            seq: i64::from(step.seq),
            kind: step.kind.as_str(),
            mode: step.mode.as_str(),
            attempt: i64::from(step.attempt),
            side_effect: step.side_effect.map(|s| s.as_str()),
            input: step.input.to_string(),
            payload_text: payload.to_string(),
            payload,
            step,
        }
    }

    /// `$1`..`$10`: the step's row.
    fn row(&self) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.id,
            &self.interaction,
            &self.seq,
            &self.kind,
            &self.mode,
            &self.attempt,
            &self.step.idempotency_key,
            &self.step.capability,
            &self.side_effect,
            &self.input,
        ]
    }

    /// A conflict at the step's place, or another failure of the statement.
    fn failed(&self, e: tokio_postgres::Error) -> StoreError {
        if rows::is(&e, &SqlState::UNIQUE_VIOLATION) {
            StoreError::Conflict(format!(
                "interaction {} already has a step at {}",
                self.interaction, self.step.seq
            ))
        } else {
            backend(e)
        }
    }

    /// The step, and its `step.started` event logged at `seq` in `session`.
    fn started(self, seq: i64, session: String, at: Timestamp) -> (Step, Event) {
        let event = rows::logged(
            seq,
            EventKind::StepStarted,
            [Some(session), Some(self.interaction), Some(self.id)],
            self.payload,
            at,
        );
        (self.step, event)
    }
}

/// `$1`..`$10` of [`FINISH_STEP`] when no step follows.
const NO_STEP: [&(dyn ToSql + Sync); 10] = [
    &None::<&str>,
    &None::<&str>,
    &None::<i64>,
    &None::<&str>,
    &None::<&str>,
    &None::<i64>,
    &None::<&str>,
    &None::<&str>,
    &None::<&str>,
    &None::<&str>,
];

/// Runs [`BEGIN_STEP`] on `client` (a transaction, or a connection outside
/// one, where the statement is a transaction of its own).
pub(crate) async fn begin(
    client: &impl GenericClient,
    begun: Begun,
    now: Timestamp,
) -> StoreResult<(Step, Event)> {
    let statement = client.prepare_cached(&BEGIN_STEP).await.map_err(backend)?;
    let (at, kind) = (now.as_millis(), EventKind::StepStarted.as_str());
    let mut params = begun.row().to_vec();
    params.extend([&at as &(dyn ToSql + Sync), &kind, &begun.payload_text]);
    let row = client
        .query_one(&statement, &params)
        .await
        .map_err(|e| begun.failed(e))?;
    let Some(session) = rows::get::<Option<String>>(&row, "session")? else {
        return Err(StoreError::not_found("interaction", &begun.interaction));
    };
    let started: Option<i64> = rows::get(&row, "started")?;
    let seq = started.ok_or_else(|| StoreError::Corrupt("no event sequence returned".into()))?;
    Ok(begun.started(seq, session, now))
}

/// What [`write_ending`] did not write: the step was in another state
/// than the caller's copy.
pub(crate) struct Unwritten {
    pub(crate) ending: StepEnding,
    pub(crate) reply: Option<NewOutboxMessage>,
    pub(crate) next: Option<Begun>,
}

/// The tasks of a reply as [`FINISH_STEP`]'s arrays, one per column.
struct Tasks {
    ids: Vec<String>,
    kinds: Vec<String>,
    payloads: Vec<String>,
    max_attempts: Vec<i64>,
    run_at: Vec<i64>,
    owner_accounts: Vec<Option<String>>,
    owner_users: Vec<Option<String>>,
}

impl Tasks {
    fn of(tasks: &[NewTask], now: Timestamp) -> Self {
        let mut columns = Self {
            ids: Vec::new(),
            kinds: Vec::new(),
            payloads: Vec::new(),
            max_attempts: Vec::new(),
            run_at: Vec::new(),
            owner_accounts: Vec::new(),
            owner_users: Vec::new(),
        };
        for new in tasks {
            let owner = new.owner.map(|(a, u)| (a.to_string(), u.to_string()));
            let task = new.clone().created(now);
            columns.ids.push(task.id.to_string());
            columns.kinds.push(task.kind);
            columns.payloads.push(task.payload.to_string());
            columns.max_attempts.push(i64::from(task.max_attempts));
            columns.run_at.push(task.run_at.as_millis());
            let (account, user) = owner.unzip();
            columns.owner_accounts.push(account);
            columns.owner_users.push(user);
        }
        columns
    }

    /// `$36`..`$42`.
    fn columns(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.ids,
            &self.kinds,
            &self.payloads,
            &self.max_attempts,
            &self.run_at,
            &self.owner_accounts,
            &self.owner_users,
        ]
    }
}

/// A failure of [`FINISH_STEP`]: a second reply to the interaction, a step
/// already at the next step's place, or the server's error.
fn refused(
    e: tokio_postgres::Error,
    interaction: &InteractionId,
    next: Option<&Begun>,
) -> StoreError {
    let constraint = e.as_db_error().and_then(|d| d.constraint());
    match (constraint, next) {
        (Some(c), _) if rows::is(&e, &SqlState::UNIQUE_VIOLATION) && c.starts_with("outbox") => {
            StoreError::Conflict(format!("interaction {interaction} already has a reply"))
        }
        (_, Some(n)) => n.failed(e),
        (_, None) => backend(e),
    }
}

/// A step's ending still to be worked out from the step as stored, or
/// worked out from the caller's copy already.
pub(crate) enum Pending {
    Outcome(StepOutcome),
    Ending(StepEnding),
}

impl PostgresStore {
    /// Ends step `id` in a transaction that locks it first: `pending`
    /// checked against its state as stored, then written as
    /// [`write_ending`] writes it.
    pub(crate) async fn finish_locked(
        &self,
        id: StepId,
        pending: Pending,
        reply: Option<NewOutboxMessage>,
        next: Option<Begun>,
        now: Timestamp,
    ) -> StoreResult<FinishedStep> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let Some(step) = load_step(&tx, &id.to_string(), true).await? else {
            return Err(StoreError::not_found("step", id));
        };
        let ending = match pending {
            Pending::Outcome(outcome) => StepEnding::of(&step, outcome)?,
            Pending::Ending(ending) => ending.recheck(&step)?,
        };
        let finished = write_ending(&tx, &self.channel, &step, ending, reply, next, now)
            .await?
            .map_err(|_| StoreError::Corrupt(format!("step {id} changed while it was locked")))?;
        tx.commit().await.map_err(backend)?;
        Ok(finished)
    }
}

/// [`FINISH_STEP`] on `client` (a transaction, or a connection outside one,
/// where the statement is a transaction of its own): the ending of `held`,
/// with `reply` and the start of `next`, if the step is still in the state
/// `held` has; if it is not, nothing is written and the parts come back.
pub(crate) async fn write_ending(
    client: &impl GenericClient,
    channel: &str,
    held: &Step,
    ending: StepEnding,
    reply: Option<NewOutboxMessage>,
    next: Option<Begun>,
    now: Timestamp,
) -> StoreResult<Result<FinishedStep, Unwritten>> {
    let statement = client.prepare_cached(&FINISH_STEP).await.map_err(backend)?;
    let (tokens, cost) = (ending.tokens(), ending.cost());
    let at = now.as_millis();
    let started_kind = next.as_ref().map(|_| EventKind::StepStarted.as_str());
    let (id, from, to) = (held.id.to_string(), held.state.as_str(), ending.to.as_str());
    let output = ending.output.as_ref().map(Value::to_string);
    let code = ending.error.as_ref().map(|e| e.code.as_str());
    let message = ending.error.as_ref().map(|e| e.message.as_str());
    let model = ending.model();
    let (input_tokens, output_tokens) = (big(tokens.input_tokens), big(tokens.output_tokens));
    let cost_nanos = cost.as_nanos();
    let usage = ending.recorded_usage();
    let usage_model = usage.map(|u| u.model.as_str());
    let usage_input = usage.map(|u| big(u.tokens.input_tokens));
    let usage_output = usage.map(|u| big(u.tokens.output_tokens));
    let usage_nanos = usage.map(|u| u.cost.as_nanos());
    let (kind, payload) = (ending.event.as_str(), ending.payload.to_string());
    let reply_id = reply.as_ref().map(|_| OutboxId::new());
    let reply_id_text = reply_id.map(|r| r.to_string());
    let reply_text = reply.as_ref().map(|r| r.text.as_str());
    let delivered = reply.as_ref().is_some_and(|r| r.delivered);
    let delivered_at = delivered.then_some(at);
    let completed_kind = reply
        .as_ref()
        .map(|_| EventKind::InteractionCompleted.as_str());
    let delivered_kind = delivered.then_some(EventKind::ReplyDelivered.as_str());
    let reply_payload = reply_id.map(|r| json!({ "outbox_id": r }));
    let reply_payload_text = reply_payload.as_ref().map(Value::to_string);
    let tasks = Tasks::of(reply.as_ref().map_or(&[][..], |r| &r.tasks), now);
    let mut params = next.as_ref().map_or(NO_STEP.to_vec(), |n| n.row().to_vec());
    let no_payload = None::<&str>;
    let started_payload: &(dyn ToSql + Sync) = match &next {
        Some(n) => &n.payload_text,
        None => &no_payload,
    };
    params.extend([
        &at as &(dyn ToSql + Sync),
        &started_kind,
        started_payload,
        &id,
        &from,
        &to,
        &output,
        &code,
        &message,
        &model,
        &input_tokens,
        &output_tokens,
        &cost_nanos,
        &usage_model,
        &usage_input,
        &usage_output,
        &usage_nanos,
        &kind,
        &payload,
        &reply_id_text,
        &reply_text,
        &delivered_at,
        &completed_kind,
        &reply_payload_text,
        &delivered_kind,
    ]);
    params.extend(tasks.columns());
    params.push(&channel);
    let row = client
        .query_one(&statement, &params)
        .await
        .map_err(|e| refused(e, &held.interaction_id, next.as_ref()))?;
    let Some(session) = rows::get::<Option<String>>(&row, "session")? else {
        return Ok(Err(Unwritten {
            ending,
            reply,
            next,
        }));
    };
    let seq = |column: &str| -> StoreResult<i64> {
        rows::get::<Option<i64>>(&row, column)?
            .ok_or_else(|| StoreError::Corrupt("no event sequence returned".into()))
    };
    let interaction = held.interaction_id.to_string();
    let ids = |step: Option<String>| [Some(session.clone()), Some(interaction.clone()), step];
    let mut events = vec![rows::logged(
        seq("ended")?,
        ending.event,
        ids(Some(id)),
        ending.payload.clone(),
        now,
    )];
    let reply = match reply_payload {
        None => None,
        Some(payload) => {
            events.push(rows::logged(
                seq("completed")?,
                EventKind::InteractionCompleted,
                ids(None),
                payload.clone(),
                now,
            ));
            if delivered {
                events.push(rows::logged(
                    seq("delivered")?,
                    EventKind::ReplyDelivered,
                    ids(None),
                    payload,
                    now,
                ));
            }
            Some(rows::outbox(&row)?)
        }
    };
    let next = match next {
        None => None,
        Some(n) => {
            let (step, event) = n.started(seq("started")?, session.clone(), now);
            events.push(event);
            Some(step)
        }
    };
    Ok(Ok(FinishedStep {
        step: ending.apply(held.clone(), now),
        next,
        reply,
        events,
    }))
}

impl PostgresStore {
    /// [`CREATE_INTERACTION`], or [`CREATE_BEGUN`] with `first`.
    pub(crate) async fn create(
        &self,
        new: NewInteraction,
        first: Option<FirstStep>,
    ) -> StoreResult<CreatedInteraction> {
        let now = self.clock.now();
        let client = self.client().await?;
        let id = InteractionId::new();
        let begun = first.map(|f| Begun::new(f.of(id), now));
        let sql: &str = if begun.is_some() {
            &CREATE_BEGUN
        } else {
            &CREATE_INTERACTION
        };
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        let kind = EventKind::InteractionCreated;
        let payload = json!({ "parent_interaction_id": new.parent_interaction_id, "delegation_depth": new.delegation_depth });
        let payload_text = payload.to_string();
        let (id_text, session) = (id.to_string(), new.session_id.to_string());
        let (account, user) = (
            new.principal.account.to_string(),
            new.principal.user.to_string(),
        );
        let team = new.principal.team.map(|t| t.to_string());
        let parent = new.parent_interaction_id.map(|p| p.to_string());
        let depth = i64::from(new.delegation_depth);
        let job = new.job_id.map(|j| j.to_string());
        let images = rows::image_ids_text(&new.images);
        let version = new.agent_version.map(i64::from);
        let at = now.as_millis();
        let channel = &*self.channel;
        let started_kind = EventKind::StepStarted.as_str();
        let (agent, interaction_kind, kind_text) =
            (new.agent_id.as_str(), new.kind.as_str(), kind.as_str());
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &id_text,
            &session,
            &account,
            &team,
            &user,
            &agent,
            &new.input,
            &new.inbound_id,
            &parent,
            &depth,
            &job,
            &interaction_kind,
            &at,
            &images,
            &version,
            &kind_text,
            &payload_text,
            &channel,
        ];
        if let Some(b) = &begun {
            params.extend(b.row());
            params.extend([&at as &(dyn ToSql + Sync), &started_kind, &b.payload_text]);
        }
        let row = client.query_one(&statement, &params).await.map_err(|e| {
            if rows::is(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
                StoreError::not_found("session", new.session_id)
            } else {
                backend(e)
            }
        })?;
        let Some(seq) = rows::get::<Option<i64>>(&row, "seq")? else {
            // The same inbound id in this session: the interaction that has it.
            let row = query_opt(
                &client,
                &format!(
                    "SELECT {INTERACTION_COLUMNS} FROM interactions WHERE session_id = $1 AND inbound_id = $2"
                ),
                &[&session, &new.inbound_id],
            )
            .await?
            .ok_or_else(|| StoreError::Conflict("the interaction could not be created".into()))?;
            return Ok(CreatedInteraction {
                interaction: rows::interaction(&row)?,
                created: None,
                first: None,
            });
        };
        let logged = |column: &str| -> StoreResult<i64> {
            rows::get::<Option<i64>>(&row, column)?
                .ok_or_else(|| StoreError::Corrupt("no event sequence returned".into()))
        };
        let created = rows::logged(
            logged("event")?,
            kind,
            [Some(session.clone()), Some(id_text), None],
            payload,
            now,
        );
        let first = match begun {
            Some(b) => Some(b.started(logged("started")?, session, now)),
            None => None,
        };
        Ok(CreatedInteraction {
            interaction: new.created(id, seq, now),
            created: Some(created),
            first,
        })
    }
}
