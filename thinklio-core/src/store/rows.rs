//! Reading domain records out of stored rows, once for every store.
//!
//! Both stores keep the same records under the same column names; what
//! differs is only how a driver hands over one column's value. A store
//! implements [`Row`] for its driver's row type (two reads: text and
//! integer) and gets every mapping here, so a record reads back the same
//! from SQLite and PostgreSQL, and a value that does not parse is the same
//! [`StoreError::Corrupt`] naming its column.

use std::str::FromStr;

use serde_json::Value;

use super::{StoreError, StoreResult};
use crate::approval::{DecidedBy, StoredDecision};
use crate::budget::BudgetLimit;
use crate::ids::AgentId;
use crate::interaction::Interaction;
use crate::job::{Job, JobNotification, JobObserver, ObserverKind};
use crate::knowledge::{Fact, FactOwner, Layer};
use crate::outbox::OutboxMessage;
use crate::principal::{Principal, Scope};
use crate::queue::Task;
use crate::session::Session;
use crate::step::{Step, StepError};
use crate::time::Timestamp;
use crate::usage::{Cost, TokenUsage};
use crate::{error::ErrorCode, event::Event};

/// A stored value that does not read as its type.
pub fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {column}: {e}"))
}

/// One row as a store's driver returns it. Implement the two reads; the
/// rest are built on them.
pub trait Row {
    /// A text column; `None` for NULL.
    fn text_opt(&self, column: &str) -> StoreResult<Option<String>>;

    /// An integer column; `None` for NULL.
    fn int_opt(&self, column: &str) -> StoreResult<Option<i64>>;

    /// A binary column; `None` for NULL.
    fn blob_opt(&self, column: &str) -> StoreResult<Option<Vec<u8>>>;

    /// A floating-point column.
    fn real(&self, column: &str) -> StoreResult<f64>;

    /// A boolean column (SQLite keeps it as 0 or 1).
    fn flag(&self, column: &str) -> StoreResult<bool>;

    /// A text column that is never NULL.
    fn text(&self, column: &str) -> StoreResult<String> {
        self.text_opt(column)?
            .ok_or_else(|| corrupt(column, "NULL where a value is required"))
    }

    /// An integer column that is never NULL.
    fn int(&self, column: &str) -> StoreResult<i64> {
        self.int_opt(column)?
            .ok_or_else(|| corrupt(column, "NULL where a value is required"))
    }

    /// A value parsed from a text column.
    fn parse<T: FromStr>(&self, column: &str) -> StoreResult<T>
    where
        T::Err: std::fmt::Display,
        Self: Sized,
    {
        self.text(column)?.parse().map_err(|e| corrupt(column, e))
    }

    /// A value parsed from a text column that may be NULL.
    fn parse_opt<T: FromStr>(&self, column: &str) -> StoreResult<Option<T>>
    where
        T::Err: std::fmt::Display,
        Self: Sized,
    {
        self.text_opt(column)?
            .map(|s| s.parse().map_err(|e| corrupt(column, e)))
            .transpose()
    }

    /// JSON kept as text.
    fn json(&self, column: &str) -> StoreResult<Value> {
        serde_json::from_str(&self.text(column)?).map_err(|e| corrupt(column, e))
    }

    /// JSON kept as text, or NULL.
    fn json_opt(&self, column: &str) -> StoreResult<Option<Value>> {
        self.text_opt(column)?
            .map(|s| serde_json::from_str(&s).map_err(|e| corrupt(column, e)))
            .transpose()
    }

    /// A time kept as milliseconds since the epoch.
    fn ts(&self, column: &str) -> StoreResult<Timestamp> {
        Ok(Timestamp::from_millis(self.int(column)?))
    }

    /// A time kept as milliseconds since the epoch, or NULL.
    fn ts_opt(&self, column: &str) -> StoreResult<Option<Timestamp>> {
        Ok(self.int_opt(column)?.map(Timestamp::from_millis))
    }

    /// A count kept as an integer (a negative one reads as 0).
    fn u32(&self, column: &str) -> StoreResult<u32> {
        Ok(u32::try_from(self.int(column)?).unwrap_or(0))
    }

    /// A count kept as an integer (a negative one reads as 0).
    fn u64(&self, column: &str) -> StoreResult<u64> {
        Ok(u64::try_from(self.int(column)?).unwrap_or(0))
    }
}

/// The SQL condition that interaction `i` (a table alias) has not ended and
/// can go on, derived from its steps exactly as
/// [`InteractionState::derive`](crate::interaction::InteractionState::derive)
/// does: no succeeded `respond` step, no `context`, `think` or `respond`
/// step failed for good, and no call anywhere in its delegation tree (the
/// interaction and the delegates below it) waiting for a decision nobody
/// has taken: such an interaction holds nothing until one is taken. A step
/// waiting on a delegate (`waiting`, not `interactive`) does not hold it by
/// itself; the decisions it waits on are below it in the tree. The same SQL
/// runs on SQLite and PostgreSQL: the interactions held are found once per
/// query, walking up from the undecided calls (few, and indexed by
/// `steps_waiting`) to every interaction above them.
pub fn unfinished(i: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM steps e WHERE e.interaction_id = {i}.id AND {}) \
         AND {i}.id NOT IN (WITH RECURSIVE held(id, parent) AS ( \
             SELECT wi.id, wi.parent_interaction_id FROM steps w \
             JOIN interactions wi ON wi.id = w.interaction_id \
             WHERE w.state = 'waiting' AND w.mode = 'interactive' \
             AND NOT EXISTS (SELECT 1 FROM approval_decisions d WHERE d.step_id = w.id) \
           UNION ALL \
             SELECT p.id, p.parent_interaction_id FROM interactions p JOIN held h ON p.id = h.parent) \
           SELECT id FROM held)",
        ending_step("e")
    )
}

/// The SQL condition that step `e` (a table alias) ended its interaction:
/// a succeeded `respond` step, or a `context`, `think` or `respond` step
/// failed for good ([`is_terminal_failure`](crate::interaction::is_terminal_failure)).
pub fn ending_step(e: &str) -> String {
    let not_terminal = ErrorCode::NOT_TERMINAL
        .iter()
        .map(|code| format!("'{code}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "(({e}.kind = 'respond' AND {e}.state = 'succeeded') OR \
          ({e}.state = 'failed' AND {e}.kind IN ('context', 'think', 'respond') \
           AND COALESCE({e}.error_code, '') NOT IN ({not_terminal})))"
    )
}

/// `columns` (a list like [`STEP_COLUMNS`]) each prefixed with `alias.`,
/// for a query that joins tables.
pub fn columns_of(columns: &str, alias: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The principal of a row (`account_id`, `team_id`, `user_id`).
pub fn principal(row: &impl Row) -> StoreResult<Principal> {
    Ok(Principal {
        account: row.parse("account_id")?,
        team: row.parse_opt("team_id")?,
        user: row.parse("user_id")?,
    })
}

/// The columns [`session`] reads.
pub const SESSION_COLUMNS: &str =
    "id, account_id, team_id, user_id, agent_id, channel, channel_key, created_at, approval_mode";

/// A session.
pub fn session(row: &impl Row) -> StoreResult<Session> {
    Ok(Session {
        id: row.parse("id")?,
        principal: principal(row)?,
        agent_id: AgentId::new(row.text("agent_id")?),
        channel: row.text("channel")?,
        key: row.text_opt("channel_key")?,
        created_at: row.ts("created_at")?,
        approval_mode: row.parse_opt("approval_mode")?,
    })
}

/// The columns [`interaction`] reads.
pub const INTERACTION_COLUMNS: &str = "seq, id, session_id, account_id, team_id, user_id, agent_id, agent_version, input, images, \
     inbound_id, parent_interaction_id, delegation_depth, job_id, kind, created_at";

/// An interaction.
pub fn interaction(row: &impl Row) -> StoreResult<Interaction> {
    Ok(Interaction {
        id: row.parse("id")?,
        seq: row.int("seq")?,
        session_id: row.parse("session_id")?,
        principal: principal(row)?,
        agent_id: AgentId::new(row.text("agent_id")?),
        input: row.text("input")?,
        images: image_ids(row, "images")?,
        agent_version: row
            .int_opt("agent_version")?
            .map(|v| u32::try_from(v).map_err(|e| corrupt("agent_version", e)))
            .transpose()?,
        inbound_id: row.text_opt("inbound_id")?,
        parent_interaction_id: row.parse_opt("parent_interaction_id")?,
        delegation_depth: row.u32("delegation_depth")?,
        job_id: row.parse_opt("job_id")?,
        kind: row.parse("kind")?,
        created_at: row.ts("created_at")?,
    })
}

/// The columns [`step`] reads.
pub const STEP_COLUMNS: &str = "id, interaction_id, seq, kind, mode, state, attempt, idempotency_key, \
     capability, side_effect, input, output, error_code, error_message, model, input_tokens, output_tokens, \
     cost_nanos, created_at, updated_at";

/// A step.
pub fn step(row: &impl Row) -> StoreResult<Step> {
    let error = match (
        row.parse_opt::<ErrorCode>("error_code")?,
        row.text_opt("error_message")?,
    ) {
        (Some(code), message) => Some(StepError::new(code, message.unwrap_or_default())),
        _ => None,
    };
    Ok(Step {
        id: row.parse("id")?,
        interaction_id: row.parse("interaction_id")?,
        seq: row.u32("seq")?,
        kind: row.parse("kind")?,
        mode: row.parse("mode")?,
        state: row.parse("state")?,
        attempt: row.u32("attempt")?,
        idempotency_key: row.text("idempotency_key")?,
        capability: row.text_opt("capability")?,
        side_effect: row.parse_opt("side_effect")?,
        input: row.json("input")?,
        output: row.json_opt("output")?,
        error,
        model: row.text_opt("model")?,
        usage: TokenUsage::new(row.u64("input_tokens")?, row.u64("output_tokens")?),
        cost: Cost::from_nanos(row.int("cost_nanos")?),
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
    })
}

/// The columns [`outbox`] reads.
pub const OUTBOX_COLUMNS: &str =
    "id, interaction_id, session_id, channel, channel_key, text, created_at, delivered_at";

/// An outbox message.
pub fn outbox(row: &impl Row) -> StoreResult<OutboxMessage> {
    Ok(OutboxMessage {
        id: row.parse("id")?,
        interaction_id: row.parse("interaction_id")?,
        session_id: row.parse("session_id")?,
        channel: row.text("channel")?,
        channel_key: row.text_opt("channel_key")?,
        text: row.text("text")?,
        created_at: row.ts("created_at")?,
        delivered_at: row.ts_opt("delivered_at")?,
    })
}

/// The columns [`event`] reads.
pub const EVENT_COLUMNS: &str = "seq, kind, session_id, interaction_id, step_id, payload, at";

/// An event of the log.
pub fn event(row: &impl Row) -> StoreResult<Event> {
    Ok(Event {
        seq: row.int("seq")?,
        kind: row.parse("kind")?,
        session_id: row.parse_opt("session_id")?,
        interaction_id: row.parse_opt("interaction_id")?,
        step_id: row.parse_opt("step_id")?,
        payload: row.json("payload")?,
        at: row.ts("at")?,
    })
}

/// The columns [`task`] reads.
pub const TASK_COLUMNS: &str = "id, kind, payload, state, attempts, max_attempts, run_at, lease_until, \
     lease_token, last_error, created_at";

/// A queued task.
pub fn task(row: &impl Row) -> StoreResult<Task> {
    Ok(Task {
        id: row.parse("id")?,
        kind: row.text("kind")?,
        payload: row.json("payload")?,
        state: row.parse("state")?,
        attempts: row.u32("attempts")?,
        max_attempts: row.u32("max_attempts")?,
        run_at: row.ts("run_at")?,
        lease_until: row.ts_opt("lease_until")?,
        lease_token: row.text_opt("lease_token")?,
        last_error: row.text_opt("last_error")?,
        created_at: row.ts("created_at")?,
    })
}

/// The columns [`job`] reads.
pub const JOB_COLUMNS: &str = "id, parent_id, session_id, interaction_id, step_id, account_id, team_id, \
     user_id, capability, input, state, usefulness, progress, result, context, error, deadline, \
     partial_notified, created_at, updated_at";

/// A job.
pub fn job(row: &impl Row) -> StoreResult<Job> {
    Ok(Job {
        id: row.parse("id")?,
        parent_id: row.parse_opt("parent_id")?,
        session_id: row.parse("session_id")?,
        interaction_id: row.parse("interaction_id")?,
        step_id: row.parse_opt("step_id")?,
        principal: principal(row)?,
        capability: row.text("capability")?,
        input: row.json("input")?,
        state: row.parse("state")?,
        usefulness: row.parse("usefulness")?,
        progress: row.json_opt("progress")?,
        result: row.json_opt("result")?,
        context: row.json_opt("context")?,
        error: row.text_opt("error")?,
        deadline: row.ts_opt("deadline")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
    })
}

/// A job's observer, read from `observer_id`, `observer_job_id` and `kind`.
pub fn observer(row: &impl Row) -> StoreResult<JobObserver> {
    let kind: ObserverKind =
        serde_json::from_value(row.json("kind")?).map_err(|e| corrupt("kind", e))?;
    Ok(JobObserver {
        id: row.parse("observer_id")?,
        job_id: row.parse("observer_job_id")?,
        kind,
    })
}

/// The columns [`notification`] reads, from `job_notifications n` joined
/// with `job_observers o`.
pub const NOTIFICATION_COLUMNS: &str = "n.id, n.notice, n.attempts, n.due_at, n.last_error, \
     n.delivered_at, n.created_at, o.id AS observer_id, o.job_id AS observer_job_id, o.kind";

/// A notice to one observer of a job.
pub fn notification(row: &impl Row) -> StoreResult<JobNotification> {
    Ok(JobNotification {
        id: row.parse("id")?,
        observer: observer(row)?,
        notice: row.parse("notice")?,
        attempts: row.u32("attempts")?,
        due_at: row.ts("due_at")?,
        last_error: row.text_opt("last_error")?,
        delivered_at: row.ts_opt("delivered_at")?,
        created_at: row.ts("created_at")?,
    })
}

/// The columns [`fact`] reads, from `facts f`.
pub const FACT_COLUMNS: &str = "f.n, f.id, f.account_id, f.layer, f.owner_id, f.subject, f.predicate, \
     f.value, f.confidence, f.provenance, f.locked, f.valid_at, f.invalid_at, f.created_at, \
     f.expired_at, f.superseded_by, f.cardinality";

/// A fact.
pub fn fact(row: &impl Row) -> StoreResult<Fact> {
    let layer: Layer = row.parse("layer")?;
    let owner = FactOwner::parse(layer, &row.text("owner_id")?)?;
    let provenance =
        serde_json::from_value(row.json("provenance")?).map_err(|e| corrupt("provenance", e))?;
    Ok(Fact {
        id: row.parse("id")?,
        account: row.parse("account_id")?,
        owner,
        subject: row.text("subject")?,
        predicate: row.text("predicate")?,
        value: row.text("value")?,
        // Kept as a double; a confidence is between 0 and 1.
        confidence: row.real("confidence")? as f32,
        provenance,
        locked: row.flag("locked")?,
        cardinality: row.parse("cardinality")?,
        valid_at: row.ts("valid_at")?,
        invalid_at: row.ts_opt("invalid_at")?,
        created_at: row.ts("created_at")?,
        expired_at: row.ts_opt("expired_at")?,
        superseded_by: row.parse_opt("superseded_by")?,
    })
}

/// The columns [`budget`] reads.
pub const BUDGET_COLUMNS: &str = "scope_kind, scope_id, limit_nanos, limit_tokens, period, warn_at";

/// A budget.
pub fn budget(row: &impl Row) -> StoreResult<BudgetLimit> {
    Ok(BudgetLimit {
        scope: Scope::parse(&row.text("scope_kind")?, &row.text("scope_id")?)?,
        cost: row.int_opt("limit_nanos")?.map(Cost::from_nanos),
        tokens: row
            .int_opt("limit_tokens")?
            .map(|t| u64::try_from(t).unwrap_or(0)),
        period: row.parse("period")?,
        warn_at: serde_json::from_str(&row.text("warn_at")?).map_err(|e| corrupt("warn_at", e))?,
    })
}

/// The columns [`decision`] reads.
pub const DECISION_COLUMNS: &str =
    "step_id, interaction_id, decision, account_id, user_id, channel, at";

/// A decision about a waiting step.
pub fn decision(row: &impl Row) -> StoreResult<StoredDecision> {
    Ok(StoredDecision {
        step_id: row.parse("step_id")?,
        interaction_id: row.parse("interaction_id")?,
        decision: serde_json::from_str(&row.text("decision")?)
            .map_err(|e| corrupt("decision", e))?,
        by: DecidedBy {
            account: row.parse("account_id")?,
            user: row.parse_opt("user_id")?,
        },
        channel: row.text("channel")?,
        at: row.ts("at")?,
    })
}

/// The columns [`summary`] reads.
pub const SUMMARY_COLUMNS: &str = "id, session_id, account_id, team_id, user_id, through_seq, \
     previous_id, text, model, input_tokens, output_tokens, cost_nanos, interaction_id, created_at";

/// A summary of a session's older turns.
pub fn summary(row: &impl Row) -> StoreResult<crate::session::Summary> {
    Ok(crate::session::Summary {
        id: row.parse("id")?,
        session_id: row.parse("session_id")?,
        principal: principal(row)?,
        through_seq: row.int("through_seq")?,
        previous: row.parse_opt("previous_id")?,
        text: row.text("text")?,
        model: row.text("model")?,
        tokens: TokenUsage::new(row.u64("input_tokens")?, row.u64("output_tokens")?),
        cost: Cost::from_nanos(row.int("cost_nanos")?),
        interaction_id: row.parse("interaction_id")?,
        created_at: row.ts("created_at")?,
    })
}

/// A list of image ids as a store keeps it: a JSON array, NULL for none.
pub fn image_ids_text(ids: &[crate::ids::ImageId]) -> Option<String> {
    (!ids.is_empty()).then(|| serde_json::to_string(ids).unwrap_or_default())
}

/// A list of image ids kept by [`image_ids_text`].
pub fn image_ids(row: &impl Row, column: &str) -> StoreResult<Vec<crate::ids::ImageId>> {
    match row.text_opt(column)? {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(column, e)),
    }
}

/// The query of [`SessionStore::history`](super::SessionStore::history)
/// (`$1` session, `$2` before seq, `$3` limit; SQLite reads them as `?N`),
/// newest first: the columns [`turn`] reads.
pub const HISTORY_QUERY: &str = "SELECT i.id, i.seq, i.input, i.images, i.created_at, o.text \
     FROM interactions i JOIN outbox o ON o.interaction_id = i.id \
     WHERE i.session_id = $1 AND i.seq < $2 AND i.parent_interaction_id IS NULL \
     ORDER BY i.seq DESC LIMIT $3";

/// A completed turn of a session.
pub fn turn(row: &impl Row) -> StoreResult<crate::session::Turn> {
    Ok(crate::session::Turn {
        interaction_id: row.parse("id")?,
        seq: row.int("seq")?,
        user: row.text("input")?,
        images: image_ids(row, "images")?,
        assistant: row.text("text")?,
        at: row.ts("created_at")?,
    })
}

/// The columns [`image`] reads.
pub const IMAGE_COLUMNS: &str =
    "id, account_id, team_id, user_id, sha256, format, width, height, data, url, created_at";

/// A stored image.
pub fn image(row: &impl Row) -> StoreResult<crate::image::Image> {
    use crate::image::{Image, ImageSource};
    let source = match (row.blob_opt("data")?, row.text_opt("url")?) {
        (Some(data), None) => ImageSource::Bytes(data.into()),
        (None, Some(url)) => ImageSource::Url(url),
        _ => {
            return Err(corrupt(
                "data",
                "an image needs exactly one of data and url",
            ));
        }
    };
    let size = match (row.int_opt("width")?, row.int_opt("height")?) {
        (Some(w), Some(h)) => Some((
            u32::try_from(w).map_err(|e| corrupt("width", e))?,
            u32::try_from(h).map_err(|e| corrupt("height", e))?,
        )),
        _ => None,
    };
    Ok(Image {
        id: row.parse("id")?,
        principal: principal(row)?,
        format: row.parse_opt("format")?,
        size,
        source,
        sha256: row.text("sha256")?,
        created_at: row.ts("created_at")?,
    })
}

fn definition(row: &impl Row) -> StoreResult<crate::agent::AgentDefinition> {
    serde_json::from_str(&row.text("definition")?).map_err(|e| corrupt("definition", e))
}

/// The columns [`stored_agent`] reads.
pub const AGENT_COLUMNS: &str =
    "id, account_id, version, state, definition, created_at, updated_at, origin, template_version";

/// A stored agent.
pub fn stored_agent(row: &impl Row) -> StoreResult<crate::catalog::StoredAgent> {
    Ok(crate::catalog::StoredAgent {
        definition: definition(row)?,
        account: row.parse("account_id")?,
        version: row.u32("version")?,
        state: row.parse("state")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
        origin: row
            .text_opt("origin")?
            .map(|o| serde_json::from_str(&o).map_err(|e| corrupt("origin", e)))
            .transpose()?,
        template_version: row
            .int_opt("template_version")?
            .map(|v| u32::try_from(v).map_err(|e| corrupt("template_version", e)))
            .transpose()?,
    })
}

/// The columns [`template`] reads.
pub const TEMPLATE_COLUMNS: &str = "id, account_id, version, spec, created_at, updated_at";

/// An agent template.
pub fn template(row: &impl Row) -> StoreResult<crate::catalog::AgentTemplate> {
    Ok(crate::catalog::AgentTemplate {
        id: crate::ids::TemplateId::new(row.text("id")?),
        account: row.parse("account_id")?,
        version: row.u32("version")?,
        spec: serde_json::from_str(&row.text("spec")?).map_err(|e| corrupt("spec", e))?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
    })
}

/// The columns [`agent_version`] reads.
pub const AGENT_VERSION_COLUMNS: &str = "agent_id, version, definition, by_user, at";

/// One version of a stored agent.
pub fn agent_version(row: &impl Row) -> StoreResult<crate::catalog::AgentVersion> {
    Ok(crate::catalog::AgentVersion {
        agent_id: AgentId::new(row.text("agent_id")?),
        version: row.u32("version")?,
        definition: definition(row)?,
        by: row.parse_opt("by_user")?,
        at: row.ts("at")?,
    })
}

/// One read of what an operator watches of a store
/// ([`OpsStore::backlog`](super::OpsStore::backlog)): rows of (what, key,
/// count) — tasks and jobs by state, undelivered replies and job notices,
/// calls waiting for a decision. The same SQL on SQLite and PostgreSQL; the
/// undelivered and waiting counts read partial indexes, tasks their
/// `(state, run_at)` index, jobs a scan of the jobs table.
pub const BACKLOG: &str = "\
    SELECT 'task' AS what, state AS key, COUNT(*) AS n FROM tasks GROUP BY state \
    UNION ALL SELECT 'job', state, COUNT(*) FROM jobs GROUP BY state \
    UNION ALL SELECT 'outbox', '', COUNT(*) FROM outbox WHERE delivered_at IS NULL \
    UNION ALL SELECT 'notice', '', COUNT(*) FROM job_notifications WHERE delivered_at IS NULL \
    UNION ALL SELECT 'approval', '', COUNT(*) FROM steps \
        WHERE state = 'waiting' AND mode = 'interactive'";

/// The [`Backlog`](super::Backlog) the rows of [`BACKLOG`] count.
pub fn backlog(rows: impl IntoIterator<Item = (String, String, i64)>) -> super::Backlog {
    let mut backlog = super::Backlog::default();
    for (what, key, n) in rows {
        let n = u64::try_from(n).unwrap_or(0);
        match what.as_str() {
            "task" => {
                backlog.tasks.insert(key, n);
            }
            "job" => {
                backlog.jobs.insert(key, n);
            }
            "outbox" => backlog.undelivered_replies = n,
            "notice" => backlog.undelivered_notices = n,
            "approval" => backlog.waiting_approvals = n,
            _ => {}
        }
    }
    backlog
}
