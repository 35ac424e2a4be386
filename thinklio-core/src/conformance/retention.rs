//! Retention: pruning finished work keeps unfinished work and every report.

use serde_json::json;

use super::*;
use crate::interaction::InteractionState;
use crate::job::{NewJob, Usefulness};
use crate::store::Pruning;
use crate::usage::{Cost, TokenUsage, UsageRecord};

const HOUR: i64 = 3_600_000;

/// A usage record of `p` at `at`.
fn usage(p: Principal, i: &Interaction, agent: &str, model: &str, at: i64, n: u64) -> UsageRecord {
    UsageRecord {
        step_id: StepId::new(),
        interaction_id: i.id,
        account: p.account,
        team: p.team,
        user: p.user,
        agent_id: AgentId::new(agent),
        model: model.into(),
        tokens: TokenUsage::new(10 * n, n),
        cost: Cost::from_nanos(1_000 * n as i64 + 7),
        at: t(at),
    }
}

/// Every report the runtime reads of `account`: totals of days and months,
/// and reports by user, team, agent and account.
async fn reports<S: Store>(store: &S, account: AccountId) -> Vec<String> {
    let mut out = Vec::new();
    let day = |d: i64| (t(d * 24 * HOUR), t((d + 1) * 24 * HOUR));
    for filter in [
        UsageFilter::all(),
        UsageFilter::all().account(account),
        UsageFilter::all().between(day(0).0, day(0).1),
        UsageFilter::all().between(day(1).0, day(1).1),
        UsageFilter::all().between(t(0), t(30 * 24 * HOUR)),
        UsageFilter::all().between(t(2 * HOUR), t(3 * HOUR)),
    ] {
        out.push(format!("{:?}", store.usage_totals(&filter).await.unwrap()));
        for group in [
            UsageGroup::User,
            UsageGroup::Team,
            UsageGroup::Agent,
            UsageGroup::Account,
        ] {
            out.push(format!(
                "{:?}",
                store.usage_report(group, &filter).await.unwrap()
            ));
        }
    }
    out
}

pub async fn retention_prunes_finished_work_and_keeps_reports<S: Store>(store: S) {
    let account = AccountId::new();
    let alice = Principal::new(account, UserId::new()).with_team(TeamId::new());
    let bob = Principal::new(account, UserId::new());
    let s = session(&store, alice, None).await;

    // A finished turn a summary covers, with a delegate that finished.
    let summarised = interaction(&store, &s, "first").await;
    run_step(&store, &summarised, 0, StepKind::Context, ok(json!({}))).await;
    run_step(&store, &summarised, 1, StepKind::Think, ok(json!({}))).await;
    run_step(&store, &summarised, 2, StepKind::Act, ok(json!({}))).await;
    let mut child = NewInteraction {
        parent_interaction_id: Some(summarised.id),
        delegation_depth: 1,
        ..new_interaction(&s, "delegated")
    };
    child.agent_id = AgentId::new("helper");
    let child = store.create_interaction(child).await.unwrap().0;
    complete(&store, &child).await;
    let ended = run_step(&store, &summarised, 3, StepKind::Respond, ok(json!({}))).await;
    // A finished turn no summary covers: its reply stays.
    let kept = interaction(&store, &s, "second").await;
    complete(&store, &kept).await;
    // A failed turn.
    let failed = interaction(&store, &s, "third").await;
    run_step(
        &store,
        &failed,
        0,
        StepKind::Think,
        StepOutcome::Failed {
            error: StepError::new(crate::error::ErrorCode::ModelHttp, "down"),
            usage: None,
        },
    )
    .await;
    // Unfinished: a turn under way, a finished turn whose job is open, and a
    // finished turn with an unfinished delegate.
    let running = interaction(&store, &s, "fourth").await;
    run_step(&store, &running, 0, StepKind::Context, ok(json!({}))).await;
    store
        .begin_step(new_step(&running, 1, StepKind::Think))
        .await
        .unwrap();
    let with_job = interaction(&store, &s, "fifth").await;
    complete(&store, &with_job).await;
    store
        .create_job(
            NewJob {
                parent_id: None,
                session_id: s.id,
                interaction_id: with_job.id,
                step_id: None,
                principal: alice,
                capability: "work".into(),
                input: json!({}),
                usefulness: Usefulness::AllSubjobs,
                deadline: None,
                observers: Vec::new(),
                key: None,
            },
            t(1),
        )
        .await
        .unwrap();
    let parent = interaction(&store, &s, "sixth").await;
    complete(&store, &parent).await;
    let busy_child = NewInteraction {
        parent_interaction_id: Some(parent.id),
        delegation_depth: 1,
        ..new_interaction(&s, "still working")
    };
    let busy_child = store.create_interaction(busy_child).await.unwrap().0;
    run_step(&store, &busy_child, 0, StepKind::Context, ok(json!({}))).await;

    for i in [&summarised, &kept] {
        let reply = store.reply_of(i.id).await.unwrap().expect("a reply");
        store
            .mark_delivered(reply.id, crate::time::SystemClock.now())
            .await
            .unwrap();
    }
    store
        .put_summary(NewSummary::new(
            &s,
            summarised.seq,
            "they said hi",
            "m",
            summarised.id,
        ))
        .await
        .unwrap();
    // A finished task and a dead letter.
    let done = store
        .enqueue(NewTask::new("k", json!(null), t(0)))
        .await
        .unwrap();
    let claimed = store.claim(t(0), LEASE, &[]).await.unwrap().unwrap();
    store
        .complete_task(done.id, claimed.lease_token.as_deref().unwrap())
        .await
        .unwrap();
    let dead = store
        .enqueue(NewTask::new("k", json!(null), t(0)).max_attempts(1))
        .await
        .unwrap();
    let claimed = store.claim(t(0), LEASE, &[]).await.unwrap().unwrap();
    store
        .fail_task(
            dead.id,
            claimed.lease_token.as_deref().unwrap(),
            "no",
            crate::queue::TaskRetry::DeadLetter,
        )
        .await
        .unwrap();

    // Usage on day 0 across hours (two in the same minute of hour 2), some
    // on day 1, and one after the usage cutoff.
    for (n, (p, agent, model, at)) in (1..).zip([
        (alice, "agent", "m1", HOUR / 2),
        (alice, "agent", "m1", 2 * HOUR + 1),
        (alice, "agent", "m1", 2 * HOUR + 2),
        (alice, "agent", "m2", 2 * HOUR + 3),
        (alice, "helper", "m1", 2 * HOUR + 4),
        (bob, "agent", "m1", 2 * HOUR + 5),
        (bob, "agent", "m1", 23 * HOUR + 59 * 60_000),
        (alice, "agent", "m1", 24 * HOUR),
        (bob, "agent", "m1", 26 * HOUR),
        (bob, "agent", "m1", 40 * HOUR),
    ]) {
        store
            .record_usage(usage(p, &summarised, agent, model, at, n))
            .await
            .unwrap();
    }
    let before = reports(&store, account).await;
    let steps_before = store.steps(summarised.id).await.unwrap();

    // A cutoff before everything prunes nothing.
    let nothing = store.prune(Pruning::new(t(0), t(0))).await.unwrap();
    assert!(nothing.is_empty(), "{nothing:?}");

    let later = crate::time::SystemClock
        .now()
        .plus(std::time::Duration::from_secs(3600));
    let report = store
        .prune(Pruning::new(later, t(30 * HOUR)).batch(2))
        .await
        .unwrap();
    assert_eq!(
        report.interactions, 4,
        "three turns and a finished delegate: {report:?}"
    );
    assert_eq!(
        report.steps,
        3 + 1 + 1,
        "all but the ending steps: {report:?}"
    );
    assert_eq!(report.replies, 1, "only the summarised reply: {report:?}");
    assert_eq!(report.tasks, 1, "the finished task, not the dead letter");
    assert_eq!(report.usage_rolled_up, 9, "{report:?}");
    assert!(report.events > 0 && report.transitions > 0, "{report:?}");

    // Reports read the same sums.
    assert_eq!(reports(&store, account).await, before);

    // Finished turns keep their message and the step that ended them.
    let steps = store.steps(summarised.id).await.unwrap();
    assert_eq!(steps, vec![ended.clone()], "before: {steps_before:?}");
    assert_eq!(
        InteractionState::derive(&steps),
        InteractionState::Completed
    );
    assert_eq!(
        store.interaction(summarised.id).await.unwrap().input,
        "first"
    );
    assert!(store.step_transitions(ended.id).await.unwrap().is_empty());
    assert_eq!(store.steps(child.id).await.unwrap().len(), 1);
    assert_eq!(
        InteractionState::derive(&store.steps(failed.id).await.unwrap()),
        InteractionState::Failed
    );
    assert_eq!(store.reply_of(summarised.id).await.unwrap(), None);
    assert!(store.reply_of(kept.id).await.unwrap().is_some());
    let history = store.history(s.id, i64::MAX, 10).await.unwrap();
    assert!(history.iter().any(|t| t.interaction_id == kept.id));

    // Unfinished work is untouched.
    let unfinished: Vec<_> = store
        .unfinished_interactions()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(unfinished, vec![running.id, busy_child.id]);
    assert_eq!(store.steps(running.id).await.unwrap().len(), 2);
    assert_eq!(store.steps(with_job.id).await.unwrap().len(), 2);
    assert_eq!(store.steps(parent.id).await.unwrap().len(), 2);
    assert_eq!(store.steps(busy_child.id).await.unwrap().len(), 1);
    let events = store.events_after(0, 100_000).await.unwrap();
    for gone in [summarised.id, child.id, kept.id, failed.id] {
        assert!(
            !events.iter().any(|e| e.interaction_id == Some(gone)),
            "the events of a pruned turn go"
        );
    }
    for stays in [running.id, with_job.id, parent.id, busy_child.id] {
        assert!(
            events.iter().any(|e| e.interaction_id == Some(stays)),
            "the events of unfinished work stay"
        );
    }
    assert_eq!(store.dead_letters().await.unwrap().len(), 1);

    // Pruning again finds nothing; a run that goes on is not disturbed.
    assert!(
        store
            .prune(Pruning::new(later, t(30 * HOUR)))
            .await
            .unwrap()
            .is_empty()
    );
    run_step(&store, &running, 2, StepKind::Respond, ok(json!({}))).await;
    assert_eq!(reports(&store, account).await, before);
}

/// The lease of claims in these checks.
const LEASE: std::time::Duration = std::time::Duration::from_millis(1000);
