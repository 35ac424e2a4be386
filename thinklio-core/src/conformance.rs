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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::*;

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
            illegal_transitions_are_rejected,
            step_seq_is_unique_per_interaction,
            respond_writes_reply_to_outbox_atomically,
            unfinished_interactions_are_derived_from_steps,
            history_lists_completed_turns_in_order,
            usage_is_recorded_and_summed,
            events_are_appended_in_order,
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

fn principal() -> Principal {
    Principal::new(AccountId::new(), UserId::new())
}

async fn session<S: Store>(store: &S, principal: Principal, key: Option<&str>) -> Session {
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

async fn interaction<S: Store>(store: &S, session: &Session, input: &str) -> Interaction {
    store
        .create_interaction(NewInteraction {
            session_id: session.id,
            principal: session.principal,
            agent_id: session.agent_id.clone(),
            input: input.into(),
            inbound_id: None,
            parent_interaction_id: None,
            delegation_depth: 0,
        })
        .await
        .unwrap()
        .0
}

fn new_step(interaction: &Interaction, seq: u32, kind: StepKind) -> NewStep {
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

fn ok(output: serde_json::Value) -> StepOutcome {
    StepOutcome::Succeeded {
        output,
        usage: None,
    }
}

async fn run_step<S: Store>(
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
        .finish_step(step.id, outcome, reply, None)
        .await
        .unwrap()
        .step
}

async fn complete<S: Store>(store: &S, i: &Interaction) {
    run_step(store, i, 0, StepKind::Context, ok(json!({}))).await;
    run_step(store, i, 1, StepKind::Respond, ok(json!({}))).await;
}

pub async fn sessions_reopen_by_key<S: Store>(store: S) {
    let p = principal();
    let a = session(&store, p, Some("chat-1")).await;
    let b = session(&store, p, Some("chat-1")).await;
    let c = session(&store, p, Some("chat-2")).await;
    let d = session(&store, p, None).await;
    let e = session(&store, p, None).await;
    assert_eq!(a.id, b.id, "the same key reopens the session");
    assert_ne!(a.id, c.id);
    assert_ne!(d.id, e.id, "sessions without a key are always new");
    assert_eq!(store.session(a.id).await.unwrap(), a);
    let other = session(&store, principal(), Some("chat-1")).await;
    assert_ne!(other.id, a.id, "keys are per principal");
    let mine = store.sessions_of_user(p.user).await.unwrap();
    assert_eq!(mine.len(), 4);
}

pub async fn missing_records_are_not_found<S: Store>(store: S) {
    let missing = store.session(SessionId::new()).await.unwrap_err();
    assert_eq!(missing.code(), "store.not_found");
    assert!(matches!(
        store.interaction(InteractionId::new()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.step(StepId::new()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.task(TaskId::new()).await,
        Err(StoreError::NotFound { .. })
    ));
    let p = principal();
    let orphan = store
        .create_interaction(NewInteraction {
            session_id: SessionId::new(),
            principal: p,
            agent_id: AgentId::new("agent"),
            input: "hi".into(),
            inbound_id: None,
            parent_interaction_id: None,
            delegation_depth: 0,
        })
        .await;
    assert!(orphan.is_err(), "an interaction needs an existing session");
}

pub async fn inbound_ids_deduplicate_interactions<S: Store>(store: S) {
    let s = session(&store, principal(), None).await;
    let new = |id: &str| NewInteraction {
        session_id: s.id,
        principal: s.principal,
        agent_id: s.agent_id.clone(),
        input: "hello".into(),
        inbound_id: Some(id.into()),
        parent_interaction_id: None,
        delegation_depth: 0,
    };
    let (a, created_a) = store.create_interaction(new("m1")).await.unwrap();
    let (b, created_b) = store.create_interaction(new("m1")).await.unwrap();
    let (c, created_c) = store.create_interaction(new("m2")).await.unwrap();
    assert_eq!(
        created_a.map(|e| e.kind),
        Some(EventKind::InteractionCreated)
    );
    assert!(created_b.is_none() && created_c.is_some());
    assert_eq!(created_c.unwrap().interaction_id, Some(c.id));
    assert_eq!(a.id, b.id);
    assert_ne!(a.id, c.id);
    assert!(c.seq > a.seq, "seq grows with creation");
    assert_eq!(store.interaction(a.id).await.unwrap(), a);
    let all = store.interactions_of_session(s.id).await.unwrap();
    assert_eq!(
        all.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![a.id, c.id]
    );
}

pub async fn step_lifecycle_records_legal_history<S: Store>(store: S) {
    let s = session(&store, principal(), None).await;
    let i = interaction(&store, &s, "q").await;
    let (step, started) = store
        .begin_step(new_step(&i, 0, StepKind::Context))
        .await
        .unwrap();
    assert_eq!(step.state, StepState::Running);
    assert_eq!(started.kind, EventKind::StepStarted);
    assert_eq!(started.step_id, Some(step.id));
    assert_eq!(started.session_id, Some(s.id));
    let finished = store
        .finish_step(step.id, ok(json!({ "x": 1 })), None, None)
        .await
        .unwrap();
    let done = finished.step;
    assert_eq!(done.state, StepState::Succeeded);
    assert_eq!(
        finished.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::StepSucceeded]
    );
    assert_eq!((finished.next, finished.reply), (None, None));
    let stored = store.step(step.id).await.unwrap();
    assert_eq!(stored, done);
    assert_eq!(stored.output, Some(json!({ "x": 1 })));
    let history = store.step_transitions(step.id).await.unwrap();
    assert_eq!(
        history.iter().map(|t| (t.from, t.to)).collect::<Vec<_>>(),
        vec![
            (None, StepState::Created),
            (Some(StepState::Created), StepState::Running),
            (Some(StepState::Running), StepState::Succeeded)
        ]
    );
    assert!(step::is_legal_history(&history));

    let (failing, _) = store
        .begin_step(new_step(&i, 1, StepKind::Think))
        .await
        .unwrap();
    let finished = store
        .finish_step(
            failing.id,
            StepOutcome::Failed {
                error: StepError::new("model.http", "boom"),
                usage: None,
            },
            None,
            None,
        )
        .await
        .unwrap();
    let failed = finished.step;
    assert_eq!(failed.state, StepState::Failed);
    assert_eq!(failed.error, Some(StepError::new("model.http", "boom")));
    assert_eq!(finished.events[0].kind, EventKind::StepFailed);
    let steps = store.steps(i.id).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![0, 1]);
}

pub async fn finishing_a_step_can_begin_the_next_atomically<S: Store>(store: S) {
    let s = session(&store, principal(), None).await;
    let i = interaction(&store, &s, "q").await;
    let (first, _) = store
        .begin_step(new_step(&i, 0, StepKind::Context))
        .await
        .unwrap();
    let finished = store
        .finish_step(
            first.id,
            ok(json!({})),
            None,
            Some(new_step(&i, 1, StepKind::Think)),
        )
        .await
        .unwrap();
    let next = finished.next.expect("the next step is begun");
    assert_eq!(
        (next.seq, next.kind, next.state),
        (1, StepKind::Think, StepState::Running)
    );
    assert_eq!(
        finished.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::StepSucceeded, EventKind::StepStarted]
    );
    assert_eq!(store.step(next.id).await.unwrap(), next);
    assert!(step::is_legal_history(
        &store.step_transitions(next.id).await.unwrap()
    ));

    // If the next step cannot be written, the outcome is not written either.
    let clash = store
        .finish_step(
            next.id,
            ok(json!({})),
            None,
            Some(new_step(&i, 0, StepKind::Act)),
        )
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    assert_eq!(store.step(next.id).await.unwrap().state, StepState::Running);
    assert_eq!(store.step_transitions(next.id).await.unwrap().len(), 2);
    assert_eq!(store.steps(i.id).await.unwrap().len(), 2);
}

pub async fn illegal_transitions_are_rejected<S: Store>(store: S) {
    let s = session(&store, principal(), None).await;
    let i = interaction(&store, &s, "q").await;
    let done = run_step(&store, &i, 0, StepKind::Context, ok(json!({}))).await;
    let again = store
        .finish_step(done.id, ok(json!({ "other": true })), None, None)
        .await;
    assert!(
        matches!(
            again,
            Err(StoreError::IllegalTransition {
                from: StepState::Succeeded,
                to: StepState::Succeeded,
                ..
            })
        ),
        "{again:?}"
    );
    let fail = store
        .finish_step(
            done.id,
            StepOutcome::Failed {
                error: StepError::new("x", "y"),
                usage: None,
            },
            None,
            None,
        )
        .await;
    assert!(matches!(fail, Err(StoreError::IllegalTransition { .. })));
    let stored = store.step(done.id).await.unwrap();
    assert_eq!(
        stored.state,
        StepState::Succeeded,
        "a rejected change changes nothing"
    );
    assert_eq!(stored.output, Some(json!({})));
    assert_eq!(store.step_transitions(done.id).await.unwrap().len(), 3);
    assert!(matches!(
        store
            .finish_step(StepId::new(), ok(json!({})), None, None)
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn step_seq_is_unique_per_interaction<S: Store>(store: S) {
    let s = session(&store, principal(), None).await;
    let i = interaction(&store, &s, "q").await;
    store
        .begin_step(new_step(&i, 0, StepKind::Context))
        .await
        .unwrap();
    let dup = store.begin_step(new_step(&i, 0, StepKind::Think)).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert_eq!(store.steps(i.id).await.unwrap().len(), 1);
}

pub async fn respond_writes_reply_to_outbox_atomically<S: Store>(store: S) {
    let s = session(&store, principal(), Some("chat")).await;
    let i = interaction(&store, &s, "q").await;
    assert_eq!(store.reply_of(i.id).await.unwrap(), None);
    run_step(&store, &i, 0, StepKind::Context, ok(json!({}))).await;
    let (respond, _) = store
        .begin_step(new_step(&i, 1, StepKind::Respond))
        .await
        .unwrap();
    let finished = store
        .finish_step(
            respond.id,
            ok(json!({})),
            Some(NewOutboxMessage::new("reply to q")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        finished.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::StepSucceeded, EventKind::InteractionCompleted]
    );
    let reply = store.reply_of(i.id).await.unwrap().expect("a reply");
    assert_eq!(finished.reply.as_ref(), Some(&reply));
    assert_eq!(reply.text, "reply to q");
    assert_eq!(reply.channel, "test");
    assert_eq!(reply.channel_key.as_deref(), Some("chat"));
    assert_eq!(reply.delivered_at, None);
    assert_eq!(store.undelivered().await.unwrap(), vec![reply.clone()]);
    let at = Timestamp::from_millis(42);
    let event = store.mark_delivered(reply.id, at).await.unwrap();
    assert_eq!(event.map(|e| e.kind), Some(EventKind::ReplyDelivered));
    assert_eq!(
        store.mark_delivered(reply.id, at).await.unwrap(),
        None,
        "idempotent"
    );
    assert!(store.undelivered().await.unwrap().is_empty());
    assert_eq!(
        store.reply_of(i.id).await.unwrap().unwrap().delivered_at,
        Some(at)
    );
    // A second reply for the same interaction is refused and leaves the step running.
    let (again, _) = store
        .begin_step(new_step(&i, 2, StepKind::Respond))
        .await
        .unwrap();
    let dup = store
        .finish_step(
            again.id,
            ok(json!({})),
            Some(NewOutboxMessage::new("twice")),
            None,
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert_eq!(
        store.step(again.id).await.unwrap().state,
        StepState::Running
    );

    // A reply whose caller is the channel is delivered with its commit.
    let j = interaction(&store, &s, "direct").await;
    let (respond, _) = store
        .begin_step(new_step(&j, 0, StepKind::Respond))
        .await
        .unwrap();
    let direct = NewOutboxMessage {
        text: "here".into(),
        delivered: true,
    };
    let finished = store
        .finish_step(respond.id, ok(json!({})), Some(direct), None)
        .await
        .unwrap();
    assert!(finished.reply.unwrap().delivered_at.is_some());
    assert_eq!(
        finished.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![
            EventKind::StepSucceeded,
            EventKind::InteractionCompleted,
            EventKind::ReplyDelivered
        ]
    );
    assert!(store.undelivered().await.unwrap().is_empty());
}

pub async fn unfinished_interactions_are_derived_from_steps<S: Store>(store: S) {
    let s = session(&store, principal(), None).await;
    let fresh = interaction(&store, &s, "fresh").await;
    let running = interaction(&store, &s, "running").await;
    store
        .begin_step(new_step(&running, 0, StepKind::Context))
        .await
        .unwrap();
    let completed = interaction(&store, &s, "completed").await;
    complete(&store, &completed).await;
    let failed = interaction(&store, &s, "failed").await;
    run_step(&store, &failed, 0, StepKind::Context, ok(json!({}))).await;
    let model_error = StepOutcome::Failed {
        error: StepError::new("model.http", "down"),
        usage: None,
    };
    run_step(&store, &failed, 1, StepKind::Think, model_error).await;
    let interrupted = interaction(&store, &s, "interrupted").await;
    let cut = StepOutcome::Failed {
        error: StepError::new(StepError::INTERRUPTED, "crash"),
        usage: None,
    };
    run_step(&store, &interrupted, 0, StepKind::Think, cut).await;
    let act_failed = interaction(&store, &s, "act failed").await;
    let tool_error = StepOutcome::Failed {
        error: StepError::new("capability.failed", "no"),
        usage: None,
    };
    run_step(&store, &act_failed, 0, StepKind::Act, tool_error).await;

    let unfinished: Vec<_> = store
        .unfinished_interactions()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(
        unfinished,
        vec![fresh.id, running.id, interrupted.id, act_failed.id]
    );
    for (i, state) in [
        (&completed, InteractionState::Completed),
        (&failed, InteractionState::Failed),
        (&running, InteractionState::Running),
        (&fresh, InteractionState::Pending),
    ] {
        assert_eq!(
            InteractionState::derive(&store.steps(i.id).await.unwrap()),
            state
        );
    }
}

pub async fn history_lists_completed_turns_in_order<S: Store>(store: S) {
    let s = session(&store, principal(), None).await;
    let other = session(&store, principal(), None).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let i = interaction(&store, &s, &format!("q{n}")).await;
        if n != 2 {
            complete(&store, &i).await;
        }
        ids.push(i);
    }
    let foreign = interaction(&store, &other, "elsewhere").await;
    complete(&store, &foreign).await;
    let current = interaction(&store, &s, "now").await;
    let all = store.history(s.id, current.seq, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.user.as_str()).collect::<Vec<_>>(),
        vec!["q0", "q1", "q3"],
        "completed turns of this session only, oldest first"
    );
    assert_eq!(all[0].assistant, "reply to q0");
    let last_two = store.history(s.id, current.seq, 2).await.unwrap();
    assert_eq!(
        last_two.iter().map(|t| t.user.as_str()).collect::<Vec<_>>(),
        vec!["q1", "q3"]
    );
    let before_q1 = store.history(s.id, ids[1].seq, 10).await.unwrap();
    assert_eq!(before_q1.len(), 1);
}

pub async fn usage_is_recorded_and_summed<S: Store>(store: S) {
    let p = principal();
    let s = session(&store, p, None).await;
    let i = interaction(&store, &s, "q").await;
    let usage = |n: u64| {
        Some(ModelUsage {
            model: "m".into(),
            tokens: TokenUsage::new(n, 2 * n),
            cost: Cost::from_nanos(i64::try_from(n).unwrap() * 10),
            rolled_up: false,
        })
    };
    let first = run_step(
        &store,
        &i,
        0,
        StepKind::Think,
        StepOutcome::Succeeded {
            output: json!({}),
            usage: usage(100),
        },
    )
    .await;
    assert_eq!(first.usage, TokenUsage::new(100, 200));
    assert_eq!(first.cost, Cost::from_nanos(1000));
    assert_eq!(first.model.as_deref(), Some("m"));
    run_step(
        &store,
        &i,
        1,
        StepKind::Think,
        StepOutcome::Failed {
            error: StepError::new("model.http", "x"),
            usage: usage(5),
        },
    )
    .await;
    let other = session(&store, principal(), None).await;
    let j = interaction(&store, &other, "q").await;
    run_step(
        &store,
        &j,
        0,
        StepKind::Think,
        StepOutcome::Succeeded {
            output: json!({}),
            usage: usage(1),
        },
    )
    .await;
    let mine = store
        .usage_totals(&UsageFilter::all().user(p.user))
        .await
        .unwrap();
    assert_eq!(mine.calls, 2);
    assert_eq!(mine.tokens, TokenUsage::new(105, 210));
    assert_eq!(mine.cost, Cost::from_nanos(1050));
    let account = store
        .usage_totals(&UsageFilter::all().account(p.account))
        .await
        .unwrap();
    assert_eq!(account, mine);
    let everything = store.usage_totals(&UsageFilter::all()).await.unwrap();
    assert_eq!(everything.calls, 3);
    let agent = store
        .usage_totals(&UsageFilter::all().agent(AgentId::new("nobody")))
        .await
        .unwrap();
    assert_eq!(agent, UsageTotals::default());
    let future = Timestamp::from_millis(i64::MAX / 2);
    let none = store
        .usage_totals(&UsageFilter::all().between(future, future.plus(Duration::from_secs(1))))
        .await
        .unwrap();
    assert_eq!(none.calls, 0);
}

pub async fn events_are_appended_in_order<S: Store>(store: S) {
    let start = store.events_after(i64::MAX - 1, 10).await.unwrap();
    assert!(start.is_empty());
    let first = store
        .append_event(NewEvent::new(EventKind::InteractionCreated).payload(json!({ "n": 1 })))
        .await
        .unwrap();
    let second = store
        .append_event(NewEvent::new(EventKind::InteractionCompleted))
        .await
        .unwrap();
    assert!(second.seq > first.seq);
    let s = session(&store, principal(), None).await;
    let i = interaction(&store, &s, "q").await;
    run_step(&store, &i, 0, StepKind::Context, ok(json!({}))).await;
    let all = store.events_after(first.seq - 1, 100).await.unwrap();
    let kinds: Vec<_> = all.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::InteractionCreated,
            EventKind::InteractionCompleted,
            EventKind::InteractionCreated,
            EventKind::StepStarted,
            EventKind::StepSucceeded
        ]
    );
    assert_eq!(all[0].payload, json!({ "n": 1 }));
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        store.events_after(first.seq, 1).await.unwrap(),
        vec![second]
    );
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

pub async fn queue_claims_lease_and_completes<S: Store>(store: S) {
    let task = store
        .enqueue(NewTask::new("k", json!({ "a": 1 }), t(1_000)))
        .await
        .unwrap();
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(
        store
            .claim(t(999), Duration::from_secs(10), &[])
            .await
            .unwrap(),
        None
    );
    let claimed = store
        .claim(t(1_000), Duration::from_secs(10), &[])
        .await
        .unwrap()
        .expect("due task");
    assert_eq!(claimed.id, task.id);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.state, TaskState::Leased);
    assert_eq!(claimed.lease_until, Some(t(11_000)));
    assert_eq!(claimed.payload, json!({ "a": 1 }));
    assert_eq!(
        store
            .claim(t(5_000), Duration::from_secs(10), &[])
            .await
            .unwrap(),
        None,
        "a leased task is not claimed again while its lease holds"
    );
    let reclaimed = store
        .claim(t(11_000), Duration::from_secs(10), &[])
        .await
        .unwrap()
        .expect("an expired lease is taken over");
    assert_eq!(reclaimed.attempts, 2);
    assert_ne!(reclaimed.lease_token, claimed.lease_token);
    store
        .complete_task(task.id, reclaimed.lease_token.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(store.task(task.id).await.unwrap().state, TaskState::Done);
    assert_eq!(
        store
            .claim(t(99_000), Duration::from_secs(10), &[])
            .await
            .unwrap(),
        None
    );
}

pub async fn queue_lost_lease_is_a_conflict<S: Store>(store: S) {
    let task = store
        .enqueue(NewTask::new("k", json!(null), t(0)))
        .await
        .unwrap();
    let first = store
        .claim(t(0), Duration::from_secs(1), &[])
        .await
        .unwrap()
        .unwrap();
    let second = store
        .claim(t(2_000), Duration::from_secs(1), &[])
        .await
        .unwrap()
        .unwrap();
    let stale = first.lease_token.unwrap();
    assert!(matches!(
        store.complete_task(task.id, &stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .fail_task(task.id, &stale, "x", TaskRetry::DeadLetter)
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .complete_task(task.id, second.lease_token.as_deref().unwrap())
        .await
        .unwrap();
}

pub async fn queue_retries_then_dead_letters_and_requeues<S: Store>(store: S) {
    let task = store
        .enqueue(NewTask::new("k", json!(null), t(0)).max_attempts(2))
        .await
        .unwrap();
    let a = store
        .claim(t(0), Duration::from_secs(5), &[])
        .await
        .unwrap()
        .unwrap();
    let retried = store
        .fail_task(
            task.id,
            a.lease_token.as_deref().unwrap(),
            "first",
            TaskRetry::At(t(500)),
        )
        .await
        .unwrap();
    assert_eq!(retried.state, TaskState::Pending);
    assert_eq!(retried.run_at, t(500));
    assert_eq!(retried.last_error.as_deref(), Some("first"));
    assert_eq!(
        store
            .claim(t(499), Duration::from_secs(5), &[])
            .await
            .unwrap(),
        None
    );
    let b = store
        .claim(t(500), Duration::from_secs(5), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.attempts, 2);
    let dead = store
        .fail_task(
            task.id,
            b.lease_token.as_deref().unwrap(),
            "second",
            TaskRetry::DeadLetter,
        )
        .await
        .unwrap();
    assert_eq!(dead.state, TaskState::Dead);
    assert_eq!(
        store
            .dead_letters()
            .await
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        vec![task.id]
    );
    assert_eq!(
        store
            .claim(t(10_000), Duration::from_secs(5), &[])
            .await
            .unwrap(),
        None
    );
    let events = store.events_after(0, 100).await.unwrap();
    assert!(events.iter().any(|e| e.kind == EventKind::TaskDeadLettered));
    let requeued = store.requeue(task.id, t(20_000)).await.unwrap();
    assert_eq!((requeued.state, requeued.attempts), (TaskState::Pending, 0));
    assert!(store.dead_letters().await.unwrap().is_empty());
    assert!(matches!(
        store.requeue(task.id, t(0)).await,
        Err(StoreError::Conflict(_))
    ));
    let d = store
        .claim(t(20_000), Duration::from_secs(5), &[])
        .await
        .unwrap()
        .unwrap();
    store
        .complete_task(d.id, d.lease_token.as_deref().unwrap())
        .await
        .unwrap();

    // A lease that runs out on the last attempt dead-letters the task.
    let once = store
        .enqueue(NewTask::new("k", json!(null), t(0)).max_attempts(1))
        .await
        .unwrap();
    let c = store
        .claim(t(30_000), Duration::from_secs(1), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.id, once.id);
    assert_eq!(
        store
            .claim(t(40_000), Duration::from_secs(1), &[])
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.task(once.id).await.unwrap().state, TaskState::Dead);
}

pub async fn queue_claims_respect_kind_and_time<S: Store>(store: S) {
    let late = store
        .enqueue(NewTask::new("a", json!(null), t(200)))
        .await
        .unwrap();
    let early = store
        .enqueue(NewTask::new("a", json!(null), t(100)))
        .await
        .unwrap();
    let other = store
        .enqueue(NewTask::new("b", json!(null), t(0)))
        .await
        .unwrap();
    let kinds = vec!["a".to_string()];
    let first = store
        .claim(t(1_000), Duration::from_secs(60), &kinds)
        .await
        .unwrap()
        .unwrap();
    let second = store
        .claim(t(1_000), Duration::from_secs(60), &kinds)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.id, second.id),
        (early.id, late.id),
        "oldest due first"
    );
    assert_eq!(
        store
            .claim(t(1_000), Duration::from_secs(60), &kinds)
            .await
            .unwrap(),
        None
    );
    let b = store
        .claim(t(1_000), Duration::from_secs(60), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.id, other.id);
}

pub async fn queue_concurrent_claims_never_overlap<S: Store>(store: S) {
    let store = Arc::new(store);
    let mut ids = HashSet::new();
    for n in 0..60 {
        ids.insert(
            store
                .enqueue(NewTask::new("k", json!(n), t(0)))
                .await
                .unwrap()
                .id,
        );
    }
    let mut workers = Vec::new();
    for _ in 0..6 {
        let store = Arc::clone(&store);
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(task) = store
                .claim(t(1), Duration::from_secs(600), &[])
                .await
                .unwrap()
            {
                store
                    .complete_task(task.id, task.lease_token.as_deref().unwrap())
                    .await
                    .unwrap();
                mine.push(task.id);
            }
            mine
        }));
    }
    let mut seen = Vec::new();
    for w in workers {
        seen.extend(w.await.unwrap());
    }
    assert_eq!(seen.len(), 60, "every task claimed exactly once");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), ids);
}

pub async fn todos_belong_to_their_owner<S: Store>(store: S) {
    let me = principal();
    let other = principal();
    let first = store
        .add_todo(me.account, me.user, "buy milk", "k1")
        .await
        .unwrap();
    let again = store
        .add_todo(me.account, me.user, "buy milk", "k1")
        .await
        .unwrap();
    assert_eq!(first, again, "the same key adds once");
    let second = store
        .add_todo(me.account, me.user, "call mum", "k2")
        .await
        .unwrap();
    assert_eq!((first.number, second.number), (1, 2));
    store
        .add_todo(other.account, other.user, "theirs", "k1")
        .await
        .unwrap();
    let mine = store.todos(me.account, me.user, false).await.unwrap();
    assert_eq!(
        mine.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(),
        vec!["buy milk", "call mum"]
    );
    let done = store
        .complete_todo(me.account, me.user, 1, t(5))
        .await
        .unwrap();
    assert_eq!(done.done_at, Some(t(5)));
    let again = store
        .complete_todo(me.account, me.user, 1, t(9))
        .await
        .unwrap();
    assert_eq!(
        again.done_at,
        Some(t(5)),
        "completing twice keeps the first time"
    );
    assert_eq!(
        store.todos(me.account, me.user, false).await.unwrap().len(),
        1
    );
    assert_eq!(
        store.todos(me.account, me.user, true).await.unwrap().len(),
        2
    );
    assert!(
        matches!(
            store
                .complete_todo(other.account, other.user, 2, t(5))
                .await,
            Err(StoreError::NotFound { .. })
        ),
        "another user's item is not found"
    );
    assert_eq!(
        store
            .todos(other.account, other.user, true)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn budgets_are_kept_and_warnings_given_once<S: Store>(store: S) {
    let p = principal();
    assert!(store.budgets().await.unwrap().is_empty());
    let user = BudgetLimit::monthly(BudgetScope::User(p.user), Cost::from_usd(1.0));
    let account = BudgetLimit::monthly(BudgetScope::Account(p.account), Cost::from_usd(5.0))
        .per(BudgetPeriod::Daily)
        .warn_at([25, 75]);
    store.set_budget(user.clone()).await.unwrap();
    store.set_budget(account.clone()).await.unwrap();
    let raised = BudgetLimit::monthly(BudgetScope::User(p.user), Cost::from_usd(2.0));
    store.set_budget(raised.clone()).await.unwrap();
    let mut all = store.budgets().await.unwrap();
    all.sort_by_key(|b| b.scope.kind());
    assert_eq!(
        all,
        vec![account.clone(), raised],
        "one limit per scope, the latest"
    );
    assert!(
        store
            .record_budget_warning(account.scope, t(0), 25)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_budget_warning(account.scope, t(0), 25)
            .await
            .unwrap(),
        "once per period"
    );
    assert!(
        store
            .record_budget_warning(account.scope, t(86_400_000), 25)
            .await
            .unwrap(),
        "again next period"
    );
    assert!(
        store
            .record_budget_warning(user.scope, t(0), 25)
            .await
            .unwrap(),
        "per scope"
    );
    assert!(store.remove_budget(user.scope).await.unwrap());
    assert!(!store.remove_budget(user.scope).await.unwrap());
    assert_eq!(store.budgets().await.unwrap(), vec![account]);
}

async fn spend<S: Store>(store: &S, p: Principal, agent: &str, cost: i64) -> Interaction {
    let s = store
        .open_session(NewSession {
            principal: p,
            agent_id: AgentId::new(agent),
            channel: "test".into(),
            key: None,
        })
        .await
        .unwrap();
    let i = store
        .create_interaction(NewInteraction {
            session_id: s.id,
            principal: p,
            agent_id: AgentId::new(agent),
            input: "q".into(),
            inbound_id: None,
            parent_interaction_id: None,
            delegation_depth: 0,
        })
        .await
        .unwrap()
        .0;
    let usage = Some(ModelUsage {
        model: "m".into(),
        tokens: TokenUsage::new(10, 1),
        cost: Cost::from_nanos(cost),
        rolled_up: false,
    });
    run_step(
        store,
        &i,
        0,
        StepKind::Think,
        StepOutcome::Succeeded {
            output: json!({}),
            usage,
        },
    )
    .await;
    run_step(store, &i, 1, StepKind::Respond, ok(json!({}))).await;
    i
}

pub async fn usage_reports_group_and_sum<S: Store>(store: S) {
    let account = AccountId::new();
    let team = TeamId::new();
    let alice = Principal::new(account, UserId::new()).with_team(team);
    let bob = Principal::new(account, UserId::new());
    spend(&store, alice, "x", 100).await;
    spend(&store, alice, "y", 50).await;
    spend(&store, bob, "x", 30).await;
    let by_user = store
        .usage_report(UsageGroup::User, &UsageFilter::all().account(account))
        .await
        .unwrap();
    assert_eq!(
        by_user
            .iter()
            .map(|r| (r.key.clone(), r.totals.cost.as_nanos(), r.totals.calls))
            .collect::<Vec<_>>(),
        vec![
            (alice.user.to_string(), 150, 2),
            (bob.user.to_string(), 30, 1)
        ],
        "highest cost first"
    );
    let by_agent = store
        .usage_report(UsageGroup::Agent, &UsageFilter::all())
        .await
        .unwrap();
    assert_eq!(
        by_agent
            .iter()
            .map(|r| (r.key.as_str(), r.totals.cost.as_nanos()))
            .collect::<Vec<_>>(),
        vec![("x", 130), ("y", 50)]
    );
    let by_team = store
        .usage_report(UsageGroup::Team, &UsageFilter::all())
        .await
        .unwrap();
    assert_eq!(
        by_team
            .iter()
            .map(|r| (r.key.clone(), r.totals.cost.as_nanos()))
            .collect::<Vec<_>>(),
        vec![(team.to_string(), 150), (String::new(), 30)]
    );
    let by_account = store
        .usage_report(UsageGroup::Account, &UsageFilter::all())
        .await
        .unwrap();
    assert_eq!(by_account.len(), 1);
    assert_eq!(
        by_account[0].totals,
        store.usage_totals(&UsageFilter::all()).await.unwrap()
    );
}

pub async fn forgetting_a_user_removes_what_they_own<S: Store>(store: S) {
    let account = AccountId::new();
    let gone = Principal::new(account, UserId::new());
    let stays = Principal::new(account, UserId::new());
    let theirs = spend(&store, gone, "x", 100).await;
    let kept = spend(&store, stays, "x", 40).await;
    store
        .add_todo(account, gone.user, "secret plan", "k")
        .await
        .unwrap();
    store
        .set_budget(BudgetLimit::monthly(
            BudgetScope::User(gone.user),
            Cost::from_usd(1.0),
        ))
        .await
        .unwrap();
    let before = store
        .usage_totals(&UsageFilter::all().account(account))
        .await
        .unwrap();

    let report = store.forget_user(account, gone.user).await.unwrap();
    assert_eq!(
        (
            report.sessions,
            report.interactions,
            report.usage_anonymized,
            report.todos
        ),
        (1, 1, 1, 1)
    );
    assert!(store.sessions_of_user(gone.user).await.unwrap().is_empty());
    assert!(matches!(
        store.interaction(theirs.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store.steps(theirs.id).await.unwrap().is_empty(),
        "step payloads are gone"
    );
    assert_eq!(store.reply_of(theirs.id).await.unwrap(), None);
    assert!(
        store
            .events_after(0, 10_000)
            .await
            .unwrap()
            .iter()
            .all(|e| e.interaction_id != Some(theirs.id))
    );
    assert!(
        store
            .todos(account, gone.user, true)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.budgets().await.unwrap().is_empty());
    assert_eq!(
        store
            .usage_totals(&UsageFilter::all().user(gone.user))
            .await
            .unwrap()
            .calls,
        0
    );
    assert_eq!(
        store
            .usage_totals(&UsageFilter::all().account(account))
            .await
            .unwrap(),
        before,
        "the account's totals stay whole"
    );
    assert_eq!(
        store
            .usage_totals(&UsageFilter::all().user(UserId::ANONYMOUS))
            .await
            .unwrap()
            .cost,
        Cost::from_nanos(100)
    );
    // The other user keeps everything.
    assert_eq!(store.steps(kept.id).await.unwrap().len(), 2);
    assert_eq!(store.sessions_of_user(stays.user).await.unwrap().len(), 1);
    assert_eq!(
        store.forget_user(account, gone.user).await.unwrap(),
        ForgetReport::default(),
        "idempotent"
    );
}

pub async fn the_directory_checks_membership_ownership_and_assignments<S: Store>(store: S) {
    let (x, y) = (AccountId::new(), AccountId::new());
    let team = TeamId::new();
    let (alice, bob, eve) = (UserId::new(), UserId::new(), UserId::new());
    let deny: std::collections::BTreeSet<String> = ["shell".to_string()].into();
    let policy = AccountPolicy {
        deny,
        ..Default::default()
    };
    store.put_account(x, "X", policy.clone()).await.unwrap();
    store
        .put_account(y, "Y", AccountPolicy::default())
        .await
        .unwrap();
    assert!(matches!(
        store.put_team(AccountId::new(), TeamId::new(), "t").await,
        Err(StoreError::NotFound { .. })
    ));
    store.put_team(x, team, "ops").await.unwrap();
    store
        .set_member(x, alice, AccountRole::Editor)
        .await
        .unwrap();
    store.set_member(x, bob, AccountRole::Viewer).await.unwrap();
    store.set_member(y, eve, AccountRole::Owner).await.unwrap();
    assert_eq!(store.role(x, bob).await.unwrap(), Some(AccountRole::Viewer));
    assert_eq!(store.role(x, eve).await.unwrap(), None);
    store.add_to_team(team, alice).await.unwrap();
    assert!(
        matches!(
            store.add_to_team(team, eve).await,
            Err(StoreError::Conflict(_))
        ),
        "not of the team's account"
    );
    let helper = AgentId::new("helper");
    store.set_agent_owner(&helper, x).await.unwrap();

    let alice_p = Principal::new(x, alice);
    assert_eq!(
        store.access(&alice_p, &helper).await.unwrap(),
        Err(AccessError::NotAssigned {
            agent: helper.clone()
        })
    );
    let narrowed: std::collections::BTreeSet<String> =
        ["add".to_string(), "search".to_string()].into();
    store
        .assign(Assignment {
            agent_id: helper.clone(),
            scope: AssignmentScope::Account(x),
            capabilities: None,
        })
        .await
        .unwrap();
    store
        .assign(Assignment {
            agent_id: helper.clone(),
            scope: AssignmentScope::Team(team),
            capabilities: Some(narrowed.clone()),
        })
        .await
        .unwrap();
    let plain = store.access(&alice_p, &helper).await.unwrap().unwrap();
    assert_eq!(plain.policy, policy);
    assert_eq!(
        plain.assignments.len(),
        1,
        "only the account assignment applies without the team"
    );
    assert!(plain.allows("clock") && !plain.allows("shell"));
    let in_team = store
        .access(&alice_p.with_team(team), &helper)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(in_team.assignments.len(), 2);
    assert!(
        in_team.allows("add") && !in_team.allows("clock"),
        "the team assignment narrows"
    );
    assert!(matches!(
        store
            .access(&Principal::new(x, bob).with_team(team), &helper)
            .await
            .unwrap(),
        Err(AccessError::NotInTeam { .. })
    ));
    assert!(
        matches!(
            store
                .access(&Principal::new(y, eve), &helper)
                .await
                .unwrap(),
            Err(AccessError::ForeignAgent { .. })
        ),
        "an agent of X is never Y's"
    );
    assert!(matches!(
        store
            .access(&Principal::new(x, eve), &helper)
            .await
            .unwrap(),
        Err(AccessError::NotAMember { .. })
    ));
}
