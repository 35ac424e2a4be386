//! Metrics through the [`metrics`] facade, as spans go through `tracing`:
//! the runtime records them, and a host installs the recorder it exports
//! with (the HTTP example serves them in the Prometheus text format at
//! `/metrics`). Without a recorder installed, recording costs a few
//! atomic loads and nothing is kept.
//!
//! Every name is a constant of this module, each described once
//! ([`describe`]). Labels are bounded: step kinds and states, capability
//! names (registered ones only), model names as providers answer them,
//! error codes; never a user, session or message.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `thinklio_steps_total` | counter | `kind`, `state`, `code` (the error code of a failed step) |
//! | `thinklio_step_duration_seconds` | histogram | `kind` |
//! | `thinklio_model_calls_total` | counter | `model`, `state` |
//! | `thinklio_model_tokens_total` | counter | `model`, `direction` (`input`, `output`) |
//! | `thinklio_model_cost_nanodollars_total` | counter | `model` |
//! | `thinklio_capability_calls_total` | counter | `capability`, `state`, `code` |
//! | `thinklio_capability_duration_seconds` | histogram | `capability` |
//! | `thinklio_interactions_in_flight` | gauge | |
//! | `thinklio_interactions_total` | counter | `outcome` (`completed`, `failed`) |
//! | `thinklio_budget_warnings_total` | counter | |
//! | `thinklio_unpriced_model_answers_total` | counter | |
//! | `thinklio_approvals_requested_total` | counter | |
//! | `thinklio_approvals_decided_total` | counter | `decision` |
//! | `thinklio_tasks_dead_lettered_total` | counter | |
//! | `thinklio_job_transitions_total` | counter | `state` |
//! | `thinklio_tasks` | gauge | `state` (sampled) |
//! | `thinklio_jobs` | gauge | `state` (sampled) |
//! | `thinklio_replies_undelivered` | gauge | (sampled) |
//! | `thinklio_notices_undelivered` | gauge | (sampled) |
//! | `thinklio_approvals_waiting` | gauge | (sampled) |
//!
//! The sampled gauges are set from the store's [`Backlog`] by
//! [`Runtime::sample_backlog`](crate::Runtime::sample_backlog), which a
//! host calls before each export (the HTTP example on every scrape).

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::event::{ApprovalDecided, Event, EventKind, JobStateChanged};
use crate::step::{Step, StepKind};
use crate::store::Backlog;

/// Steps ended, by kind, state (`succeeded`, `failed`, `waiting`) and the
/// error code of a failed one.
pub const STEPS: &str = "thinklio_steps_total";
/// How long a step's work took, by kind (measured in the process that ran it).
pub const STEP_DURATION: &str = "thinklio_step_duration_seconds";
/// Model calls (`think` steps), by model and state.
pub const MODEL_CALLS: &str = "thinklio_model_calls_total";
/// Tokens of model calls, by model and direction.
pub const MODEL_TOKENS: &str = "thinklio_model_tokens_total";
/// Cost of model calls in billionths of a dollar, by model.
pub const MODEL_COST: &str = "thinklio_model_cost_nanodollars_total";
/// Capability calls (`act` steps), by capability, state and error code.
pub const CAPABILITY_CALLS: &str = "thinklio_capability_calls_total";
/// How long capability calls took, by capability.
pub const CAPABILITY_DURATION: &str = "thinklio_capability_duration_seconds";
/// Interactions this process is running now.
pub const INTERACTIONS_IN_FLIGHT: &str = "thinklio_interactions_in_flight";
/// Interactions ended, by outcome.
pub const INTERACTIONS: &str = "thinklio_interactions_total";
/// Budget warnings given.
pub const BUDGET_WARNINGS: &str = "thinklio_budget_warnings_total";
/// Answers of models with no price (their cost counts as zero).
pub const UNPRICED: &str = "thinklio_unpriced_model_answers_total";
/// Calls that asked for a person's decision.
pub const APPROVALS_REQUESTED: &str = "thinklio_approvals_requested_total";
/// Decisions taken, by decision.
pub const APPROVALS_DECIDED: &str = "thinklio_approvals_decided_total";
/// Tasks that ran out of attempts.
pub const TASKS_DEAD_LETTERED: &str = "thinklio_tasks_dead_lettered_total";
/// Jobs' moves, by the state moved to.
pub const JOB_TRANSITIONS: &str = "thinklio_job_transitions_total";
/// Queued tasks by state, as last sampled.
pub const TASKS: &str = "thinklio_tasks";
/// Jobs by state, as last sampled.
pub const JOBS: &str = "thinklio_jobs";
/// Replies in the outbox not yet delivered, as last sampled.
pub const REPLIES_UNDELIVERED: &str = "thinklio_replies_undelivered";
/// Job notices not yet delivered, as last sampled.
pub const NOTICES_UNDELIVERED: &str = "thinklio_notices_undelivered";
/// Calls waiting for a decision, as last sampled.
pub const APPROVALS_WAITING: &str = "thinklio_approvals_waiting";

/// Every metric's name.
pub const ALL: &[&str] = &[
    STEPS,
    STEP_DURATION,
    MODEL_CALLS,
    MODEL_TOKENS,
    MODEL_COST,
    CAPABILITY_CALLS,
    CAPABILITY_DURATION,
    INTERACTIONS_IN_FLIGHT,
    INTERACTIONS,
    BUDGET_WARNINGS,
    UNPRICED,
    APPROVALS_REQUESTED,
    APPROVALS_DECIDED,
    TASKS_DEAD_LETTERED,
    JOB_TRANSITIONS,
    TASKS,
    JOBS,
    REPLIES_UNDELIVERED,
    NOTICES_UNDELIVERED,
    APPROVALS_WAITING,
];

/// Describes every metric to the installed recorder (units and help
/// texts); the runtime's builder calls it, and a host that installs its
/// recorder later may call it again.
pub fn describe() {
    describe_counter!(STEPS, "Steps ended, by kind, state and error code.");
    describe_histogram!(
        STEP_DURATION,
        Unit::Seconds,
        "How long a step's work took, by kind."
    );
    describe_counter!(MODEL_CALLS, "Model calls, by model and state.");
    describe_counter!(
        MODEL_TOKENS,
        "Tokens of model calls, by model and direction."
    );
    describe_counter!(
        MODEL_COST,
        "Cost of model calls in billionths of a US dollar, by model."
    );
    describe_counter!(
        CAPABILITY_CALLS,
        "Capability calls, by capability, state and error code."
    );
    describe_histogram!(
        CAPABILITY_DURATION,
        Unit::Seconds,
        "How long capability calls took."
    );
    describe_gauge!(
        INTERACTIONS_IN_FLIGHT,
        "Interactions this process is running."
    );
    describe_counter!(INTERACTIONS, "Interactions ended, by outcome.");
    describe_counter!(BUDGET_WARNINGS, "Budget warnings given.");
    describe_counter!(UNPRICED, "Answers of models with no price.");
    describe_counter!(
        APPROVALS_REQUESTED,
        "Calls that asked for a person's decision."
    );
    describe_counter!(APPROVALS_DECIDED, "Decisions taken, by decision.");
    describe_counter!(TASKS_DEAD_LETTERED, "Tasks that ran out of attempts.");
    describe_counter!(JOB_TRANSITIONS, "Jobs' moves, by the state moved to.");
    describe_gauge!(TASKS, "Queued tasks by state (sampled from the store).");
    describe_gauge!(JOBS, "Jobs by state (sampled from the store).");
    describe_gauge!(REPLIES_UNDELIVERED, "Replies not yet delivered (sampled).");
    describe_gauge!(
        NOTICES_UNDELIVERED,
        "Job notices not yet delivered (sampled)."
    );
    describe_gauge!(APPROVALS_WAITING, "Calls waiting for a decision (sampled).");
}

/// Records a step that ended (or began to wait): `took` is how long its
/// work ran in this process, when it ran here.
pub(crate) fn step_ended(step: &Step, took: Option<Duration>) {
    let kind = step.kind.as_str();
    let state = step.state.as_str();
    let code = step.error.as_ref().map_or("", |e| e.code.as_str());
    counter!(STEPS, "kind" => kind, "state" => state, "code" => code).increment(1);
    if let Some(took) = took {
        histogram!(STEP_DURATION, "kind" => kind).record(took.as_secs_f64());
    }
    match step.kind {
        StepKind::Think => {
            let model = step.model.clone().unwrap_or_default();
            counter!(MODEL_CALLS, "model" => model.clone(), "state" => state).increment(1);
            counter!(MODEL_TOKENS, "model" => model.clone(), "direction" => "input")
                .increment(step.usage.input_tokens);
            counter!(MODEL_TOKENS, "model" => model.clone(), "direction" => "output")
                .increment(step.usage.output_tokens);
            counter!(MODEL_COST, "model" => model)
                .increment(u64::try_from(step.cost.as_nanos()).unwrap_or(0));
        }
        StepKind::Act => {
            let capability = step.capability.clone().unwrap_or_default();
            counter!(CAPABILITY_CALLS, "capability" => capability.clone(), "state" => state, "code" => code)
                .increment(1);
            if let Some(took) = took {
                histogram!(CAPABILITY_DURATION, "capability" => capability)
                    .record(took.as_secs_f64());
            }
        }
        _ => {}
    }
}

/// Records what an event says: interactions ended, warnings, approvals,
/// dead letters, jobs' moves.
pub(crate) fn event(event: &Event) {
    match event.kind {
        EventKind::InteractionCompleted => {
            counter!(INTERACTIONS, "outcome" => "completed").increment(1);
        }
        EventKind::InteractionFailed => {
            counter!(INTERACTIONS, "outcome" => "failed").increment(1);
        }
        EventKind::BudgetWarning => counter!(BUDGET_WARNINGS).increment(1),
        EventKind::UsageUnpriced => counter!(UNPRICED).increment(1),
        EventKind::ApprovalRequested => counter!(APPROVALS_REQUESTED).increment(1),
        EventKind::ApprovalDecided => {
            let decision = serde_json::from_value::<ApprovalDecided>(event.payload.clone())
                .map(|d| d.decision.as_str())
                .unwrap_or("unknown");
            counter!(APPROVALS_DECIDED, "decision" => decision).increment(1);
        }
        EventKind::TaskDeadLettered => counter!(TASKS_DEAD_LETTERED).increment(1),
        EventKind::JobStateChanged => {
            let state = serde_json::from_value::<JobStateChanged>(event.payload.clone())
                .map(|c| c.to.as_str())
                .unwrap_or("unknown");
            counter!(JOB_TRANSITIONS, "state" => state).increment(1);
        }
        _ => {}
    }
}

/// Counts an interaction this process runs until the guard is dropped.
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn start() -> Self {
        gauge!(INTERACTIONS_IN_FLIGHT).increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(INTERACTIONS_IN_FLIGHT).decrement(1.0);
    }
}

/// Sets the sampled gauges from a store's backlog. A state no longer in
/// the backlog is set to zero, so a gauge never keeps a stale count.
pub(crate) fn backlog(backlog: &Backlog) {
    for (name, counts, states) in [
        (TASKS, &backlog.tasks, crate::queue::TaskState::NAMES),
        (JOBS, &backlog.jobs, crate::job::JobState::NAMES),
    ] {
        for state in states {
            let n = counts.get(*state).copied().unwrap_or(0);
            gauge!(name, "state" => *state).set(n as f64);
        }
    }
    gauge!(REPLIES_UNDELIVERED).set(backlog.undelivered_replies as f64);
    gauge!(NOTICES_UNDELIVERED).set(backlog.undelivered_notices as f64);
    gauge!(APPROVALS_WAITING).set(backlog.waiting_approvals as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric names an expression reads (a histogram's `_bucket`,
    /// `_sum` and `_count` series count as the histogram).
    fn names_in(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("thinklio_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| ALL.contains(b)))
                .unwrap_or(name);
            names.push(base.to_owned());
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_shipped_dashboard_and_alerts_read_only_metrics_that_exist() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/ops/grafana-dashboard.json")).unwrap();
        let mut read = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            let targets = panel["targets"].as_array().unwrap();
            assert!(
                !targets.is_empty(),
                "panel {} reads nothing",
                panel["title"]
            );
            for t in targets {
                read.extend(names_in(t["expr"].as_str().unwrap()));
            }
        }
        let rules = include_str!("../../docs/ops/alerts.yml")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        read.extend(names_in(&rules));
        for name in &read {
            assert!(
                ALL.contains(&name.as_str()),
                "`{name}` is no metric of Thinklio"
            );
        }
        // Every metric is on the dashboard.
        for name in ALL {
            assert!(read.iter().any(|r| r == name), "`{name}` is on no panel");
        }
    }

    #[test]
    fn every_name_is_prometheus_shaped_and_counters_end_in_total() {
        for name in ALL {
            assert!(
                name.starts_with("thinklio_")
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        for counter in [
            STEPS,
            MODEL_CALLS,
            MODEL_TOKENS,
            MODEL_COST,
            CAPABILITY_CALLS,
            INTERACTIONS,
        ] {
            assert!(counter.ends_with("_total"), "{counter}");
        }
    }
}
