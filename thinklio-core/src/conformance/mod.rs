//! The store conformance suite: one set of checks that every store crate runs
//! against its store. A store is done when it passes, not before.
//!
//! Each check is a public async function taking a fresh, empty store. Store
//! crates run them all with [`store_conformance_tests!`](crate::store_conformance_tests),
//! as `thinklio-store-sqlite/tests/conformance.rs` does:
//!
//! ```text
//! thinklio_core::store_conformance_tests!(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = MyStore::open(dir.path().join("t.db")).await.unwrap();
//!     (store, dir) // anything kept alive for the test goes in the tuple
//! });
//! ```
//!
//! This module is test support: a failed check panics with what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::json;

use crate::*;

mod approvals;
mod governance;
mod jobs;
mod knowledge;
mod queue;
mod retention;
mod steps;
mod vectors;

pub use approvals::*;
pub use governance::*;
pub use jobs::*;
pub use knowledge::*;
pub use queue::*;
pub use retention::*;
pub use steps::*;
pub use vectors::*;

/// Generates one `#[tokio::test]` per conformance check. The argument is an
/// async block returning `(store, guard)`; the guard (a temp dir, a server
/// handle) is kept alive for the length of the test.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@each $make;
            sessions_reopen_by_key,
            missing_records_are_not_found,
            inbound_ids_deduplicate_interactions,
            step_lifecycle_records_legal_history,
            finishing_a_step_can_begin_the_next_atomically,
            a_first_step_is_begun_with_its_interaction,
            illegal_transitions_are_rejected,
            step_seq_is_unique_per_interaction,
            respond_writes_reply_to_outbox_atomically,
            unfinished_interactions_are_derived_from_steps,
            history_lists_completed_turns_in_order,
            usage_is_recorded_and_summed,
            events_are_appended_in_order,
            approvals_are_decided_once_and_resume_their_step,
            a_delegate_waiting_holds_its_callers_until_decided,
            summaries_are_kept_once_per_turn_and_chain,
            images_are_stored_once_per_user_and_listed_by_turns,
            queue_claims_lease_and_completes,
            queue_lost_lease_is_a_conflict,
            queue_retries_then_dead_letters_and_requeues,
            queue_claims_respect_kind_and_time,
            queue_concurrent_claims_never_overlap,
            todos_belong_to_their_owner,
            budgets_are_kept_and_warnings_given_once,
            usage_reports_group_and_sum,
            forgetting_a_user_removes_what_they_own,
            the_directory_checks_membership_ownership_and_assignments,
            stored_agents_are_versioned_owned_and_have_a_lifecycle,
            templates_are_versioned_and_owned_and_agents_keep_their_origin,
            facts_are_reconciled_and_never_overwritten,
            many_valued_facts_accumulate,
            a_single_valued_fact_supersedes_only_its_slot,
            an_update_supersedes_only_the_named_fact,
            every_fact_query_applies_visibility,
            a_large_layer_is_searched_through_the_vector_index,
            fact_search_ranks_and_resolves_conflicts_by_precedence,
            a_question_naming_a_period_finds_what_was_said_then,
            deleting_facts_keeps_only_content_free_history,
            jobs_move_only_along_their_state_machine,
            observers_hear_each_change_once_and_partial_output_once,
            job_claims_are_atomic_and_deadlines_are_listed,
            jobs_are_created_once_per_key_and_follow_ups_name_their_job,
            notices_are_claimed_by_one_deliverer_at_a_time,
            leases_hand_dead_workers_jobs_and_sessions_to_others,
            sessions_are_claimed_many_at_once_and_each_by_one_worker,
            the_backlog_counts_work_waiting_and_stuck,
            retention_prunes_finished_work_and_keeps_reports,
        );
    };
    (@each $make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (store, _guard) = $make.await;
                $crate::conformance::$check(store).await;
            }
        )+
    };
}

pub(super) fn principal() -> Principal {
    Principal::new(AccountId::new(), UserId::new())
}

pub(super) async fn session<S: Store>(
    store: &S,
    principal: Principal,
    key: Option<&str>,
) -> Session {
    store
        .open_session(NewSession {
            principal,
            agent_id: AgentId::new("agent"),
            channel: "test".into(),
            key: key.map(str::to_owned),
        })
        .await
        .unwrap()
}

pub(super) async fn interaction<S: Store>(
    store: &S,
    session: &Session,
    input: &str,
) -> Interaction {
    store
        .create_interaction(new_interaction(session, input))
        .await
        .unwrap()
        .0
}

pub(super) fn new_interaction(session: &Session, input: &str) -> NewInteraction {
    NewInteraction {
        session_id: session.id,
        principal: session.principal,
        agent_id: session.agent_id.clone(),
        input: input.into(),
        images: Vec::new(),
        agent_version: None,
        inbound_id: None,
        parent_interaction_id: None,
        delegation_depth: 0,
        job_id: None,
        kind: crate::interaction::InteractionKind::Message,
    }
}

pub(super) fn new_step(interaction: &Interaction, seq: u32, kind: StepKind) -> NewStep {
    NewStep {
        interaction_id: interaction.id,
        seq,
        kind,
        mode: StepMode::Immediate,
        attempt: 1,
        idempotency_key: format!("{}:{seq}", interaction.id),
        capability: None,
        side_effect: None,
        input: json!({ "seq": seq }),
    }
}

pub(super) fn ok(output: serde_json::Value) -> StepOutcome {
    StepOutcome::Succeeded {
        output,
        usage: None,
    }
}

pub(super) async fn run_step<S: Store>(
    store: &S,
    i: &Interaction,
    seq: u32,
    kind: StepKind,
    outcome: StepOutcome,
) -> Step {
    let (step, _) = store.begin_step(new_step(i, seq, kind)).await.unwrap();
    let reply = (kind == StepKind::Respond && outcome.state() == StepState::Succeeded)
        .then(|| NewOutboxMessage::new(format!("reply to {}", i.input)));
    store
        .finish_step(&step, outcome, reply, None)
        .await
        .unwrap()
        .step
}

pub(super) async fn complete<S: Store>(store: &S, i: &Interaction) {
    run_step(store, i, 0, StepKind::Context, ok(json!({}))).await;
    run_step(store, i, 1, StepKind::Respond, ok(json!({}))).await;
}

pub(super) fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}
