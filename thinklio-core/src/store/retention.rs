//! Retention: what a store prunes of finished work, and the SQL both stores
//! run for it ([`OpsStore::prune`](super::OpsStore::prune)).
//!
//! Pruning never touches unfinished work and never changes what a report
//! or a budget reads:
//! - An interaction is pruned once it has ended (its ending step is
//!   stored), began before the cutoff, is a conversation's turn (not a
//!   delegate's: a delegate goes with the turn above it) and has no open
//!   job. Its steps go except the one that ended it, so its state still
//!   derives as before (completed or failed, never pending); their
//!   transitions go; the interaction row (the message) stays, marked
//!   `pruned_at`. The delegates below it are pruned with it; a turn with a
//!   delegate that has not ended is left whole.
//! - Events go once older than the cutoff, unless they belong to an
//!   interaction not pruned (unfinished work keeps its log).
//! - A delivered reply goes once a summary of its conversation covers it:
//!   the conversation's context reads the summary from then on, so the
//!   agent forgets nothing it would have remembered. Replies of
//!   conversations that are never summarised stay (they are the
//!   transcript the context is made of).
//! - Usage records older than their cutoff are rolled up first: one row
//!   per hour, account, team, user, agent and model, with the number of
//!   calls, tokens and cost summed. Every report and budget whose bounds
//!   fall on the hour (days and months do) reads the same sums as before.
//! - Finished queue tasks (`done`) go; dead letters stay for a person.
//!
//! Work goes in batches of [`Pruning::batch`] turns, each its own
//! transaction, so a runtime writing beside it waits for one batch at most.

use crate::job::JobState;
use crate::time::Timestamp;

/// What a store is asked to prune: cutoffs and the batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pruning {
    /// Finished turns, events and delivered replies from before this go.
    pub finished_before: Timestamp,
    /// Usage records from before this are rolled up by the hour.
    pub usage_before: Timestamp,
    /// Turns (or events, or usage records) per transaction.
    pub batch: u32,
}

impl Pruning {
    /// A pruning of what finished before `finished_before` and of usage
    /// detail before `usage_before`, 1,000 at a time.
    pub fn new(finished_before: Timestamp, usage_before: Timestamp) -> Self {
        Self {
            finished_before,
            usage_before,
            batch: 1_000,
        }
    }

    /// With `batch` rows per transaction (at least 1).
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }
}

/// What a pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Interactions pruned (turns and the delegates below them).
    pub interactions: u64,
    /// Steps deleted.
    pub steps: u64,
    /// Step transitions deleted.
    pub transitions: u64,
    /// Events deleted.
    pub events: u64,
    /// Delivered replies deleted.
    pub replies: u64,
    /// Usage records rolled up.
    pub usage_rolled_up: u64,
    /// Rows the rolled-up records became.
    pub usage_rollups: u64,
    /// Finished queue tasks deleted.
    pub tasks: u64,
}

impl PruneReport {
    /// Whether nothing was pruned.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl std::ops::AddAssign for PruneReport {
    fn add_assign(&mut self, o: Self) {
        self.interactions += o.interactions;
        self.steps += o.steps;
        self.transitions += o.transitions;
        self.events += o.events;
        self.replies += o.replies;
        self.usage_rolled_up += o.usage_rolled_up;
        self.usage_rollups += o.usage_rollups;
        self.tasks += o.tasks;
    }
}

/// The conditions on a turn `r` (`$1` finished before) that it may be
/// pruned, its delegates aside: not pruned, a conversation's turn, begun
/// before the cutoff, ended, and no open job.
fn prunable_turn() -> String {
    let ended = super::rows::ending_step("e");
    let open_jobs = JobState::NAMES
        .iter()
        .filter(|n| n.parse::<JobState>().is_ok_and(|s| !s.is_terminal()))
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "r.pruned_at IS NULL AND r.parent_interaction_id IS NULL AND r.created_at < $1 \
         AND EXISTS (SELECT 1 FROM steps e WHERE e.interaction_id = r.id AND {ended}) \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.interaction_id = r.id \
                         AND j.state IN ({open_jobs}))"
    )
}

/// The `seq` of the last turn of the next batch (`$1` finished before, `$2`
/// batch size, `$3` the last batch's last `seq`); NULL when none is left.
/// Walks unpruned interactions in order (index `interactions_unpruned`).
pub fn batch_end() -> String {
    format!(
        "SELECT MAX(seq) FROM (SELECT r.seq FROM interactions r WHERE {} AND r.seq > $3 \
         ORDER BY r.seq LIMIT $2) batch",
        prunable_turn()
    )
}

/// Marks a batch (`$1` finished before, `$2` after `seq`, `$3` through
/// `seq`): its prunable turns and the delegates below them (index
/// `interactions_by_parent`), `pruned_at = -1` until [`UNMARK`] in the same
/// transaction. A turn with a delegate still unfinished is left whole.
pub fn mark() -> String {
    let ended = super::rows::ending_step("e");
    format!(
        "UPDATE interactions SET pruned_at = -1 WHERE pruned_at IS NULL AND id IN ( \
           WITH RECURSIVE tree(id, root) AS ( \
             SELECT r.id, r.id FROM interactions r WHERE {} AND r.seq > $2 AND r.seq <= $3 \
             UNION ALL \
             SELECT c.id, t.root FROM interactions c JOIN tree t ON c.parent_interaction_id = t.id) \
           SELECT t.id FROM tree t WHERE t.root NOT IN (SELECT u.root FROM tree u \
             WHERE NOT EXISTS (SELECT 1 FROM steps e WHERE e.interaction_id = u.id AND {ended})))",
        prunable_turn()
    )
}

/// Deletes the transitions of the marked interactions' steps.
pub const TRANSITIONS: &str = "DELETE FROM step_transitions WHERE step_id IN \
    (SELECT s.id FROM steps s JOIN interactions i ON i.id = s.interaction_id \
     WHERE i.pruned_at = -1)";

/// Deletes the marked interactions' steps but the ones that ended them.
pub fn steps() -> String {
    format!(
        "DELETE FROM steps WHERE interaction_id IN \
           (SELECT id FROM interactions WHERE pruned_at = -1) \
         AND NOT {}",
        super::rows::ending_step("steps")
    )
}

/// Ends a batch (`$1` now): the marked interactions are pruned.
pub const UNMARK: &str = "UPDATE interactions SET pruned_at = $1 WHERE pruned_at = -1";

/// The `seq` of the last event of the next batch of old events (`$1`
/// before, `$2` batch size, `$3` the last batch's last `seq`); NULL when
/// none is left. Events are walked in order from where the last batch
/// ended, so deleted rows are never walked again.
pub const EVENTS_END: &str = "SELECT MAX(seq) FROM (SELECT seq FROM events \
    WHERE seq > $3 AND at < $1 ORDER BY seq LIMIT $2) batch";

/// Deletes the old events of a batch (`$1` before, `$2` after `seq`, `$3`
/// through `seq`) but those of an interaction not pruned (unfinished work
/// keeps its log).
pub const EVENTS: &str = "DELETE FROM events WHERE seq > $2 AND seq <= $3 AND at < $1 \
    AND NOT EXISTS (SELECT 1 FROM interactions i \
                    WHERE i.id = events.interaction_id AND i.pruned_at IS NULL)";

/// Deletes delivered replies (`$1` delivered before) of pruned turns that a
/// summary of their conversation covers.
pub const REPLIES: &str = "DELETE FROM outbox WHERE delivered_at IS NOT NULL \
    AND delivered_at < $1 AND interaction_id IN \
    (SELECT i.id FROM interactions i WHERE i.pruned_at > 0 AND EXISTS \
       (SELECT 1 FROM summaries s WHERE s.session_id = i.session_id AND s.through_seq >= i.seq))";

/// The highest id of the next batch of usage records to roll up (`$1`
/// before, `$2` batch size, `$3` the last batch's highest id); NULL when
/// none is left. Raw records carry their step; rolled-up rows (and the
/// records of a forgotten user) carry none.
pub const USAGE_BOUND: &str = "SELECT MAX(id) FROM (SELECT id FROM usage_records \
    WHERE id > $3 AND step_id <> '' AND at < $1 ORDER BY id LIMIT $2) batch";

/// Writes the rollups of a batch of usage records (`$1` before, `$2`
/// highest id, `$3` the last batch's): one row per hour, account, team,
/// user, agent and model.
pub const USAGE_ROLLUP: &str = "INSERT INTO usage_records (step_id, interaction_id, account_id, \
    team_id, user_id, agent_id, model, input_tokens, output_tokens, cost_nanos, at, calls) \
    SELECT '', '', account_id, team_id, user_id, agent_id, model, SUM(input_tokens), \
    SUM(output_tokens), SUM(cost_nanos), (at / 3600000) * 3600000, SUM(calls) \
    FROM usage_records WHERE step_id <> '' AND at < $1 AND id <= $2 AND id > $3 \
    GROUP BY account_id, team_id, user_id, agent_id, model, at / 3600000";

/// Deletes the usage records [`USAGE_ROLLUP`] rolled up (same parameters).
pub const USAGE_ROLLED: &str =
    "DELETE FROM usage_records WHERE step_id <> '' AND at < $1 AND id <= $2 AND id > $3";

/// Deletes finished queue tasks (`$1` updated before).
pub const TASKS: &str = "DELETE FROM tasks WHERE state = 'done' AND updated_at < $1";

/// The sums a usage report reads: calls (a rollup counts the calls it
/// holds), input and output tokens, cost.
pub const USAGE_SUMS: &str = "CAST(COALESCE(SUM(calls), 0) AS BIGINT), \
    CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), \
    CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT)";
