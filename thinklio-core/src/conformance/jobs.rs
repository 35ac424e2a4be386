//! Checks of jobs: the state machine, notices to observers (partial output
//! included), atomic claims, deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::json;

use super::*;

async fn new_job<S: Store>(store: &S, parent: Option<JobId>, observers: Vec<ObserverKind>) -> Job {
    new_job_with(
        store,
        parent,
        observers,
        Usefulness::AllSubjobs,
        "work",
        None,
    )
    .await
}

async fn new_job_with<S: Store>(
    store: &S,
    parent: Option<JobId>,
    observers: Vec<ObserverKind>,
    usefulness: Usefulness,
    capability: &str,
    deadline: Option<Timestamp>,
) -> Job {
    let p = principal();
    let s = session(store, p, None).await;
    let i = interaction(store, &s, "later, please").await;
    store
        .create_job(
            NewJob {
                parent_id: parent,
                session_id: s.id,
                interaction_id: i.id,
                step_id: None,
                principal: p,
                capability: capability.into(),
                input: json!({ "n": 1 }),
                usefulness,
                deadline,
                observers,
                key: None,
            },
            t(1),
        )
        .await
        .unwrap()
}

/// The lease of claims in these checks.
const LEASE: std::time::Duration = std::time::Duration::from_millis(1000);

const ALL: [JobState; 7] = [
    JobState::Pending,
    JobState::Dispatched,
    JobState::InProgress,
    JobState::Resolved,
    JobState::Failed,
    JobState::Cancelled,
    JobState::TimedOut,
];

/// The legal path from `pending` to `state`.
fn path_to(state: JobState) -> Vec<JobState> {
    match state {
        JobState::Pending => vec![],
        JobState::Dispatched => vec![JobState::Dispatched],
        JobState::InProgress => vec![JobState::Dispatched, JobState::InProgress],
        end => vec![JobState::Dispatched, JobState::InProgress, end],
    }
}

pub async fn jobs_move_only_along_their_state_machine<S: Store>(store: S) {
    let mut legal = 0;
    for from in ALL {
        for to in ALL {
            let job = new_job(&store, None, vec![ObserverKind::FollowUp]).await;
            for step in path_to(from) {
                store
                    .update_job(job.id, JobChange::to(step), t(2))
                    .await
                    .unwrap();
            }
            let before = store.events_after(0, 100_000).await.unwrap().len();
            let result = store
                .update_job(job.id, JobChange::to(to).result(json!("r")), t(3))
                .await;
            let after = store.job(job.id).await.unwrap();
            if from.can_become(to) {
                legal += 1;
                let update = result.unwrap_or_else(|e| panic!("{from} → {to} is legal: {e}"));
                assert_eq!(update.job.state, to);
                assert_eq!(update.job.result, Some(json!("r")));
                let events = store.events_after(0, 100_000).await.unwrap();
                let last = events.last().unwrap();
                assert_eq!(last.kind, EventKind::JobStateChanged);
                assert_eq!(last.payload["to"], json!(to));
                assert_eq!(
                    update.event.as_ref(),
                    Some(last),
                    "the update returns its event"
                );
                assert_eq!(
                    update.notifications.len(),
                    usize::from(Notice::of(to).is_some()),
                    "{from} → {to}"
                );
            } else {
                match result {
                    Err(StoreError::IllegalJobTransition { from: f, to: t, .. }) => {
                        assert_eq!((f, t), (from, to));
                    }
                    other => panic!("{from} → {to} must be refused, got {other:?}"),
                }
                assert_eq!(after.state, from, "a refused move changes nothing");
                assert_eq!(after.result, None, "nor any data");
                assert_eq!(store.events_after(0, 100_000).await.unwrap().len(), before);
            }
        }
    }
    assert_eq!(
        legal,
        2 + 3 * 4,
        "forward twice, and each open state to each end"
    );
    // An ended job takes no data either.
    let job = new_job(&store, None, vec![]).await;
    store
        .update_job(
            job.id,
            JobChange::to(JobState::Cancelled).error("user"),
            t(2),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .update_job(job.id, JobChange::default().progress(json!(50)), t(3))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // Progress while under way is an update, not a move.
    let job = new_job(&store, None, vec![ObserverKind::FollowUp]).await;
    store
        .update_job(job.id, JobChange::to(JobState::Dispatched), t(2))
        .await
        .unwrap();
    let u = store
        .update_job(
            job.id,
            JobChange::default().progress(json!({ "done": 1 })),
            t(3),
        )
        .await
        .unwrap();
    assert_eq!(
        (u.job.state, u.job.progress.clone()),
        (JobState::Dispatched, Some(json!({ "done": 1 })))
    );
    assert!(u.notifications.is_empty());
    assert!(matches!(
        store
            .update_job(JobId::new(), JobChange::to(JobState::Dispatched), t(3))
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn observers_hear_each_change_once_and_partial_output_once<S: Store>(store: S) {
    let observers = vec![
        ObserverKind::FollowUp,
        ObserverKind::Webhook {
            url: "https://example.org/hook".into(),
        },
        ObserverKind::Callback {
            name: "audit".into(),
        },
    ];
    let parent = new_job_with(
        &store,
        None,
        observers,
        Usefulness::AnyCompletedSubjob,
        "research",
        None,
    )
    .await;
    let a = new_job(&store, Some(parent.id), vec![]).await;
    let b = new_job(&store, Some(parent.id), vec![]).await;
    assert_eq!(
        store
            .subjobs(parent.id)
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        vec![a.id, b.id]
    );
    assert_eq!(store.job_observers(parent.id).await.unwrap().len(), 3);

    let dispatched = store
        .update_job(parent.id, JobChange::to(JobState::Dispatched), t(2))
        .await
        .unwrap();
    assert_eq!(dispatched.notifications.len(), 3);
    for sub in [a.id, b.id] {
        store
            .update_job(sub, JobChange::to(JobState::Dispatched), t(3))
            .await
            .unwrap();
    }
    let first = store
        .update_job(
            a.id,
            JobChange::to(JobState::Resolved).result(json!("half")),
            t(4),
        )
        .await
        .unwrap();
    assert_eq!(
        first.notifications.len(),
        3,
        "the parent's observers hear of partial output"
    );
    assert!(
        first
            .notifications
            .iter()
            .all(|n| n.notice == Notice::Partial && n.observer.job_id == parent.id)
    );
    let second = store
        .update_job(
            b.id,
            JobChange::to(JobState::Resolved).result(json!("rest")),
            t(5),
        )
        .await
        .unwrap();
    assert!(
        second.notifications.is_empty(),
        "partial output is told once"
    );
    store
        .update_job(
            parent.id,
            JobChange::to(JobState::Resolved)
                .result(json!("all"))
                .context(json!({ "for": "follow-up" })),
            t(6),
        )
        .await
        .unwrap();

    // One notice per observer at a time, oldest first: an observer hears of
    // a change only after it heard of the ones before.
    let notices = |due: &[JobNotification]| due.iter().map(|n| n.notice).collect::<Vec<_>>();
    let heads = store.due_notifications(t(100), 100).await.unwrap();
    assert_eq!(notices(&heads), [Notice::Dispatched; 3]);
    let observer_ids: Vec<ObserverId> = heads.iter().map(|n| n.observer.id).collect();
    // The webhook's delivery fails and is retried later; the others go on.
    let retried = store
        .notification_failed(heads[1].id, "HTTP 503", t(500))
        .await
        .unwrap();
    assert_eq!((retried.attempts, retried.due_at), (1, t(500)));
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));
    for n in [&heads[0], &heads[2]] {
        assert!(store.notification_delivered(n.id, t(101)).await.unwrap());
        assert!(
            !store.notification_delivered(n.id, t(102)).await.unwrap(),
            "idempotent"
        );
    }
    let mut told: Vec<(ObserverId, Notice)> = Vec::new();
    loop {
        let due = store.due_notifications(t(200), 100).await.unwrap();
        if due.is_empty() {
            break;
        }
        assert!(
            due.iter().all(|n| n.observer.id != observer_ids[1]),
            "the webhook's later notices wait for its failed one"
        );
        for n in due {
            assert!(store.notification_delivered(n.id, t(201)).await.unwrap());
            told.push((n.observer.id, n.notice));
        }
    }
    for o in [observer_ids[0], observer_ids[2]] {
        let of: Vec<Notice> = told
            .iter()
            .filter(|(x, _)| *x == o)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            of,
            [Notice::Partial, Notice::Resolved],
            "each change once, in order"
        );
    }
    let mut webhook = Vec::new();
    loop {
        let due = store.due_notifications(t(500), 100).await.unwrap();
        if due.is_empty() {
            break;
        }
        for n in due {
            assert_eq!(n.observer.id, observer_ids[1]);
            assert!(store.notification_delivered(n.id, t(501)).await.unwrap());
            webhook.push(n.notice);
        }
    }
    assert_eq!(
        webhook,
        [Notice::Dispatched, Notice::Partial, Notice::Resolved]
    );
    assert!(matches!(
        store.notification_failed(heads[0].id, "late", t(600)).await,
        Err(StoreError::Conflict(_))
    ));
    // A parent that ended takes no subjobs; an all-subjobs parent hears no partial output.
    let p = principal();
    let s = session(&store, p, None).await;
    let i = interaction(&store, &s, "x").await;
    let late = store
        .create_job(
            NewJob {
                parent_id: Some(parent.id),
                session_id: s.id,
                interaction_id: i.id,
                step_id: None,
                principal: p,
                capability: "work".into(),
                input: json!(null),
                usefulness: Usefulness::AllSubjobs,
                deadline: None,
                observers: vec![],
                key: None,
            },
            t(7),
        )
        .await;
    assert!(matches!(late, Err(StoreError::Conflict(_))));
    let whole = new_job(&store, None, vec![ObserverKind::FollowUp]).await;
    let part = new_job(&store, Some(whole.id), vec![]).await;
    store
        .update_job(part.id, JobChange::to(JobState::Dispatched), t(8))
        .await
        .unwrap();
    let done = store
        .update_job(part.id, JobChange::to(JobState::Resolved), t(9))
        .await
        .unwrap();
    assert!(done.notifications.is_empty());
}

pub async fn job_claims_are_atomic_and_deadlines_are_listed<S: Store + Clone>(store: S) {
    let mut ids = Vec::new();
    for i in 0..20 {
        let cap = if i % 2 == 0 { "even" } else { "odd" };
        let deadline = (i < 5).then(|| t(10 + i));
        ids.push(
            new_job_with(&store, None, vec![], Usefulness::AllSubjobs, cap, deadline)
                .await
                .id,
        );
    }
    let only_odd = store
        .claim_job(&["odd".into()], "w0", t(2), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(only_odd.job.capability, "odd");
    assert_eq!(only_odd.job.state, JobState::Dispatched);
    assert_eq!(only_odd.job.id, ids[1], "oldest first");
    let mut workers = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(u) = store.claim_job(&[], "w1", t(3), LEASE).await.unwrap() {
                mine.push(u.job.id);
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut claimed = vec![only_odd.job.id];
    for w in workers {
        claimed.extend(w.await.unwrap());
    }
    claimed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(claimed, expected, "every job claimed exactly once");
    assert_eq!(store.unfinished_jobs().await.unwrap().len(), 20);

    let overdue = store.overdue_jobs(t(12)).await.unwrap();
    assert_eq!(
        overdue.iter().map(|j| j.id).collect::<Vec<_>>(),
        ids[..3].to_vec()
    );
    store
        .update_job(ids[0], JobChange::to(JobState::TimedOut), t(12))
        .await
        .unwrap();
    assert_eq!(
        store.overdue_jobs(t(12)).await.unwrap().len(),
        2,
        "an ended job is not overdue"
    );
    assert_eq!(store.unfinished_jobs().await.unwrap().len(), 19);
}

pub async fn jobs_are_created_once_per_key_and_follow_ups_name_their_job<S: Store>(store: S) {
    let p = principal();
    let s = session(&store, p, None).await;
    let i = interaction(&store, &s, "research this").await;
    let new = |key: &str| NewJob {
        parent_id: None,
        session_id: s.id,
        interaction_id: i.id,
        step_id: None,
        principal: p,
        capability: "research".into(),
        input: json!({ "topic": key }),
        usefulness: Usefulness::AnyCompletedSubjob,
        deadline: Some(t(100)),
        observers: vec![ObserverKind::FollowUp],
        key: Some(key.into()),
    };
    let first = store.create_job(new("act:1"), t(1)).await.unwrap();
    let again = store.create_job(new("act:1"), t(2)).await.unwrap();
    assert_eq!(first, again, "the same key returns the job created first");
    assert_eq!(store.job_observers(first.id).await.unwrap().len(), 1);
    let other = store.create_job(new("act:2"), t(3)).await.unwrap();
    assert_ne!(other.id, first.id);
    assert_eq!(store.unfinished_jobs().await.unwrap().len(), 2);
    // A follow-up interaction keeps the job it reports on.
    let (follow_up, _) = store
        .create_interaction(NewInteraction {
            session_id: s.id,
            principal: p,
            agent_id: s.agent_id.clone(),
            input: "job resolved".into(),
            images: Vec::new(),
            agent_version: None,
            inbound_id: Some("notice:1".into()),
            parent_interaction_id: None,
            delegation_depth: 0,
            job_id: Some(first.id),
            kind: crate::interaction::InteractionKind::Message,
        })
        .await
        .unwrap();
    assert_eq!(follow_up.job_id, Some(first.id));
    assert_eq!(
        store.interaction(follow_up.id).await.unwrap().job_id,
        Some(first.id)
    );
    assert_eq!(store.interaction(i.id).await.unwrap().job_id, None);
}

pub async fn notices_are_claimed_by_one_deliverer_at_a_time<S: Store + Clone>(store: S) {
    let observers = (0..8)
        .map(|i| ObserverKind::Callback {
            name: format!("o{i}"),
        })
        .collect();
    let job = new_job(&store, None, observers).await;
    store
        .update_job(job.id, JobChange::to(JobState::Dispatched), t(2))
        .await
        .unwrap();
    let lease = std::time::Duration::from_millis(1000);
    let claims: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_notifications(t(10), lease, 3).await.unwrap() })
        })
        .collect();
    let mut claimed = Vec::new();
    for c in claims {
        let got = c.await.unwrap();
        assert!(
            got.iter().all(|n| n.due_at == t(1010)),
            "leased until now + lease"
        );
        claimed.extend(got.into_iter().map(|n| n.id));
    }
    let distinct: std::collections::HashSet<_> = claimed.iter().collect();
    assert_eq!(
        (claimed.len(), distinct.len()),
        (8, 8),
        "each notice taken once"
    );
    assert!(
        store
            .claim_notifications(t(500), lease, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // A deliverer that died: its notices come back after the lease.
    assert!(
        store
            .notification_delivered(claimed[0], t(600))
            .await
            .unwrap()
    );
    let again = store
        .claim_notifications(t(1010), lease, 100)
        .await
        .unwrap();
    assert_eq!(again.len(), 7);
    assert!(again.iter().all(|n| n.id != claimed[0] && n.attempts == 0));
}

pub async fn leases_hand_dead_workers_jobs_and_sessions_to_others<S: Store + Clone>(store: S) {
    // Sessions: waiting work is claimed by one worker; its lease keeps
    // others out until released or run out.
    let p = principal();
    let s1 = session(&store, p, Some("one")).await;
    let s2 = session(&store, p, Some("two")).await;
    assert!(
        store
            .claim_session("a", t(10), LEASE)
            .await
            .unwrap()
            .is_none(),
        "no work yet"
    );
    let i1 = interaction(&store, &s1, "first").await;
    interaction(&store, &s2, "second").await;
    assert_eq!(
        store.claim_session("a", t(10), LEASE).await.unwrap(),
        Some(s1.id),
        "oldest work first"
    );
    assert_eq!(
        store.claim_session("b", t(10), LEASE).await.unwrap(),
        Some(s2.id)
    );
    assert_eq!(
        store.claim_session("c", t(10), LEASE).await.unwrap(),
        None,
        "both held"
    );
    assert!(!store.lease_session(s1.id, "c", t(20), LEASE).await.unwrap());
    assert!(
        store.lease_session(s1.id, "a", t(20), LEASE).await.unwrap(),
        "its holder renews"
    );
    // Taken with the session as stored (its approval mode set since).
    store
        .set_session_approval_mode(s1.id, Some(crate::approval::ApprovalMode::Draft))
        .await
        .unwrap();
    assert_eq!(
        store
            .lease_session_read(s1.id, "c", t(20), LEASE)
            .await
            .unwrap(),
        None,
        "held by another"
    );
    let read = store
        .lease_session_read(s1.id, "a", t(20), LEASE)
        .await
        .unwrap()
        .expect("its holder renews");
    assert_eq!(read, store.session(s1.id).await.unwrap());
    assert_eq!(
        read.approval_mode,
        Some(crate::approval::ApprovalMode::Draft)
    );
    assert!(matches!(
        store
            .lease_session_read(crate::ids::SessionId::new(), "a", t(20), LEASE)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    store.release_session(s2.id, "b").await.unwrap();
    assert_eq!(
        store.claim_session("c", t(30), LEASE).await.unwrap(),
        Some(s2.id)
    );
    // The holder of s1 dies: after its lease, s1 is claimed again.
    assert_eq!(
        store.claim_session("d", t(1019), LEASE).await.unwrap(),
        None
    );
    assert_eq!(
        store.claim_session("d", t(1020), LEASE).await.unwrap(),
        Some(s1.id)
    );
    // A finished interaction is no work.
    let step = store
        .begin_step(new_step(&i1, 0, StepKind::Respond))
        .await
        .unwrap()
        .0;
    store
        .finish_step(
            &step,
            StepOutcome::Succeeded {
                output: json!({}),
                usage: None,
            },
            Some(NewOutboxMessage::new("done")),
            None,
        )
        .await
        .unwrap();
    assert!(
        store.unfinished_in_session(s1.id).await.unwrap().is_empty(),
        "s1's work is done"
    );
    assert_eq!(
        store
            .unfinished_in_session(s2.id)
            .await
            .unwrap()
            .iter()
            .map(|i| i.input.as_str())
            .collect::<Vec<_>>(),
        ["second"]
    );
    store.release_session(s1.id, "d").await.unwrap();
    store.release_session(s2.id, "c").await.unwrap();
    assert_eq!(
        store.claim_session("e", t(5000), LEASE).await.unwrap(),
        Some(s2.id)
    );
    assert_eq!(
        store.claim_session("f", t(5000), LEASE).await.unwrap(),
        None
    );
    assert!(matches!(
        store
            .lease_session(SessionId::new(), "a", t(1), LEASE)
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // A dispatched job whose worker stops renewing is taken over once.
    let job = new_job(&store, None, vec![ObserverKind::FollowUp]).await;
    let first = store
        .claim_job(&[], "a", t(10), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.job.id, first.taken_over), (job.id, false));
    assert!(
        store
            .claim_job(&[], "b", t(500), LEASE)
            .await
            .unwrap()
            .is_none(),
        "leased"
    );
    assert!(store.renew_job(job.id, "a", t(1500)).await.unwrap());
    assert!(
        !store.renew_job(job.id, "b", t(1500)).await.unwrap(),
        "only its holder renews"
    );
    assert!(
        store
            .claim_job(&[], "b", t(1200), LEASE)
            .await
            .unwrap()
            .is_none(),
        "renewed"
    );
    let taken = store
        .claim_job(&[], "b", t(1500), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(taken.taken_over);
    assert_eq!(taken.job.state, JobState::Dispatched);
    assert!(
        taken.event.is_none() && taken.notifications.is_empty(),
        "no move, no notice"
    );
    assert!(
        !store.renew_job(job.id, "a", t(1600)).await.unwrap(),
        "the dead worker lost it"
    );
    store
        .update_job(job.id, JobChange::to(JobState::Resolved), t(1700))
        .await
        .unwrap();
    assert!(
        store
            .claim_job(&[], "c", t(9000), LEASE)
            .await
            .unwrap()
            .is_none(),
        "ended jobs stay ended"
    );
}

/// What operations watch, counted in one read: tasks and jobs by state,
/// replies and notices not yet delivered, calls waiting for a decision;
/// each count falls when the work is done.
pub async fn the_backlog_counts_work_waiting_and_stuck<S: Store>(store: S) {
    use crate::store::Backlog;
    assert_eq!(store.backlog().await.unwrap(), Backlog::default());

    // Tasks: one pending (due later), one dead.
    store
        .enqueue(NewTask::new("k", json!(null), t(100)))
        .await
        .unwrap();
    let doomed = store
        .enqueue(NewTask::new("k", json!(null), t(0)).max_attempts(1))
        .await
        .unwrap();
    let claimed = store
        .claim(t(0), LEASE, &[])
        .await
        .unwrap()
        .expect("the due task");
    assert_eq!(claimed.id, doomed.id);
    store
        .fail_task(
            doomed.id,
            claimed.lease_token.as_deref().unwrap(),
            "no",
            TaskRetry::DeadLetter,
        )
        .await
        .unwrap();
    // A job with two observers, dispatched: two notices to deliver.
    let observers = ["a", "b"]
        .map(|name| ObserverKind::Callback { name: name.into() })
        .to_vec();
    let job = new_job(&store, None, observers).await;
    store
        .update_job(job.id, JobChange::to(JobState::Dispatched), t(2))
        .await
        .unwrap();
    let notices = store.claim_notifications(t(10), LEASE, 10).await.unwrap();
    // A reply in the outbox; a call waiting for a decision.
    let s = session(&store, principal(), None).await;
    let i = interaction(&store, &s, "hi").await;
    run_step(&store, &i, 0, StepKind::Respond, ok(json!({}))).await;
    let i = interaction(&store, &s, "add milk").await;
    let mut act = new_step(&i, 0, StepKind::Act);
    act.mode = StepMode::Interactive;
    let (step, _) = store.begin_step(act).await.unwrap();
    store
        .finish_step(
            &step,
            StepOutcome::Waiting {
                proposal: json!({ "call": { "id": "c1", "name": "add_todo", "arguments": "{}" }, "reason": "draft" }),
            },
            None,
            None,
        )
        .await
        .unwrap();

    let backlog = store.backlog().await.unwrap();
    assert_eq!(
        backlog.tasks,
        [("dead".to_owned(), 1), ("pending".to_owned(), 1)].into(),
        "{backlog:?}"
    );
    assert_eq!(
        backlog.jobs,
        [("dispatched".to_owned(), 1)].into(),
        "{backlog:?}"
    );
    assert_eq!(
        (
            backlog.undelivered_notices,
            backlog.undelivered_replies,
            backlog.waiting_approvals
        ),
        (notices.len() as u64, 1, 1),
        "{backlog:?}"
    );
    assert_eq!(notices.len(), 2);

    // Delivered, the counts fall.
    for n in &notices {
        store.notification_delivered(n.id, t(20)).await.unwrap();
    }
    for m in store.undelivered().await.unwrap() {
        store.mark_delivered(m.id, t(20)).await.unwrap();
    }
    let after = store.backlog().await.unwrap();
    assert_eq!(
        (after.undelivered_notices, after.undelivered_replies),
        (0, 0)
    );
}
