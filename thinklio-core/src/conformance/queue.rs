//! Checks of the durable queue.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;

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

pub async fn sessions_are_claimed_many_at_once_and_each_by_one_worker<S: Store>(store: S) {
    const LEASE: Duration = Duration::from_millis(1000);
    let p = principal();
    let mut sessions = Vec::new();
    for n in 0..5 {
        let s = session(&store, p, Some(&format!("s{n}"))).await;
        // Two turns waiting in each: a session is claimed once all the same.
        interaction(&store, &s, "first").await;
        interaction(&store, &s, "second").await;
        sessions.push(s.id);
    }
    let first = store.claim_sessions("a", t(10), LEASE, 3).await.unwrap();
    assert_eq!(first.len(), 3, "{first:?}");
    let mut sorted = first.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "each session once: {first:?}");
    for id in &first {
        assert!(sessions[..3].contains(id), "oldest work first: {first:?}");
    }
    let rest = store.claim_sessions("b", t(10), LEASE, 10).await.unwrap();
    let mut all: Vec<_> = first.iter().chain(&rest).copied().collect();
    all.sort();
    let mut expected = sessions.clone();
    expected.sort();
    assert_eq!(all, expected, "the other two, none held by a");
    assert!(
        store
            .claim_sessions("c", t(10), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Once the leases run out, another worker takes them all again.
    let later = t(10 + LEASE.as_millis() as i64);
    assert_eq!(
        store
            .claim_sessions("c", later, LEASE, 10)
            .await
            .unwrap()
            .len(),
        5
    );
}
