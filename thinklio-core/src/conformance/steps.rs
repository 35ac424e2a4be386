//! Checks of sessions, interactions, steps, the outbox, usage and events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use serde_json::json;

use super::*;

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
    assert_eq!(missing.code(), ErrorCode::StoreNotFound);
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
            images: Vec::new(),
            agent_version: None,
            inbound_id: None,
            parent_interaction_id: None,
            delegation_depth: 0,
            job_id: None,
            kind: crate::interaction::InteractionKind::Message,
        })
        .await;
    assert!(orphan.is_err(), "an interaction needs an existing session");
}

pub async fn inbound_ids_deduplicate_interactions<S: Store>(store: S) {
    let s = session(&store, principal(), None).await;
    // What started an interaction is kept: a host's dispatch reads back as one.
    let new = |id: &str| NewInteraction {
        session_id: s.id,
        principal: s.principal,
        agent_id: s.agent_id.clone(),
        input: "hello".into(),
        images: Vec::new(),
        agent_version: None,
        inbound_id: Some(id.into()),
        parent_interaction_id: None,
        delegation_depth: 0,
        job_id: None,
        kind: if id == "m2" {
            crate::interaction::InteractionKind::Dispatch
        } else {
            crate::interaction::InteractionKind::Message
        },
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
    assert_eq!(a.kind, crate::interaction::InteractionKind::Message);
    assert_eq!(
        store.interaction(c.id).await.unwrap().kind,
        crate::interaction::InteractionKind::Dispatch
    );
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
        .finish_step(&step, ok(json!({ "x": 1 })), None, None)
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
            &failing,
            StepOutcome::Failed {
                error: StepError::new(ErrorCode::ModelHttp, "boom"),
                usage: None,
            },
            None,
            None,
        )
        .await
        .unwrap();
    let failed = finished.step;
    assert_eq!(failed.state, StepState::Failed);
    assert_eq!(
        failed.error,
        Some(StepError::new(ErrorCode::ModelHttp, "boom"))
    );
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
            &first,
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
            &next,
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

pub async fn a_first_step_is_begun_with_its_interaction<S: Store>(store: S) {
    let s = session(&store, principal(), None).await;
    let first = || crate::step::FirstStep {
        kind: StepKind::Context,
        name: "context".into(),
        input: json!({ "message_bytes": 1 }),
    };
    let mut new = new_interaction(&s, "q");
    new.inbound_id = Some("m1".into());
    let made = store
        .create_interaction_begun(new.clone(), first())
        .await
        .unwrap();
    let i = made.interaction;
    let (step, started) = made.first.expect("a new interaction's first step");
    let created = made.created.expect("its created event");
    assert_eq!(created.kind, EventKind::InteractionCreated);
    assert_eq!(started.kind, EventKind::StepStarted);
    assert_eq!(started.step_id, Some(step.id));
    assert!(
        created.seq < started.seq,
        "the interaction's event comes first"
    );
    assert_eq!(
        (step.seq, step.state, step.attempt, step.kind),
        (0, StepState::Running, 1, StepKind::Context)
    );
    assert_eq!(step.idempotency_key, crate::step::step_key(i.id, "context"));
    assert_eq!(store.steps(i.id).await.unwrap(), vec![step.clone()]);
    assert_eq!(store.step_transitions(step.id).await.unwrap().len(), 2);
    let logged: Vec<Event> = store
        .events_after(created.seq - 1, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.interaction_id == Some(i.id))
        .collect();
    assert_eq!(logged, vec![created, started]);
    // The same message again: the interaction it made, no second step.
    let again = store.create_interaction_begun(new, first()).await.unwrap();
    assert_eq!(again.interaction.id, i.id);
    assert_eq!((again.created, again.first), (None, None));
    assert_eq!(store.steps(i.id).await.unwrap().len(), 1);
    // An unknown session: nothing written.
    let mut lost = new_interaction(&s, "q");
    lost.session_id = crate::ids::SessionId::new();
    assert!(matches!(
        store.create_interaction_begun(lost, first()).await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn illegal_transitions_are_rejected<S: Store>(store: S) {
    let s = session(&store, principal(), None).await;
    let i = interaction(&store, &s, "q").await;
    let done = run_step(&store, &i, 0, StepKind::Context, ok(json!({}))).await;
    let again = store
        .finish_step(&done, ok(json!({ "other": true })), None, None)
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
            &done,
            StepOutcome::Failed {
                error: StepError::new(ErrorCode::StepFailed, "y"),
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
    // A copy still `running` of a step that has ended: the store checks
    // the move against the state it holds, not the copy's.
    let (running, _) = store
        .begin_step(new_step(&i, 1, StepKind::Think))
        .await
        .unwrap();
    store
        .finish_step(&running, ok(json!({ "first": true })), None, None)
        .await
        .unwrap();
    let stale = store
        .finish_step(
            &running,
            ok(json!({ "second": true })),
            None,
            Some(new_step(&i, 2, StepKind::Respond)),
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(StoreError::IllegalTransition {
                from: StepState::Succeeded,
                to: StepState::Succeeded,
                ..
            })
        ),
        "{stale:?}"
    );
    let kept = store.step(running.id).await.unwrap();
    assert_eq!(kept.output, Some(json!({ "first": true })));
    assert_eq!(store.step_transitions(running.id).await.unwrap().len(), 3);
    assert_eq!(
        store.steps(i.id).await.unwrap().len(),
        2,
        "a rejected ending begins no next step"
    );
    let mut ghost = running.clone();
    ghost.id = StepId::new();
    assert!(matches!(
        store.finish_step(&ghost, ok(json!({})), None, None).await,
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
            &respond,
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
            &again,
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
        tasks: vec![NewTask::new("knowledge.extract", json!({ "n": 1 }), t(0))],
    };
    let finished = store
        .finish_step(&respond, ok(json!({})), Some(direct), None)
        .await
        .unwrap();
    assert!(finished.reply.unwrap().delivered_at.is_some());
    let task = store
        .claim(
            t(1),
            std::time::Duration::from_secs(5),
            &["knowledge.extract".into()],
        )
        .await
        .unwrap()
        .expect("the reply's task was enqueued in its commit");
    assert_eq!(task.payload, json!({ "n": 1 }));
    assert_eq!(
        finished.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![
            EventKind::StepSucceeded,
            EventKind::InteractionCompleted,
            EventKind::ReplyDelivered
        ]
    );
    let logged: Vec<Event> = store
        .events_after(finished.events[0].seq - 1, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.interaction_id == Some(j.id))
        .collect();
    assert_eq!(
        logged, finished.events,
        "the events returned are the events logged, in their order"
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
        error: StepError::new(ErrorCode::ModelHttp, "down"),
        usage: None,
    };
    run_step(&store, &failed, 1, StepKind::Think, model_error).await;
    let interrupted = interaction(&store, &s, "interrupted").await;
    let cut = StepOutcome::Failed {
        error: StepError::new(ErrorCode::StepInterrupted, "crash"),
        usage: None,
    };
    run_step(&store, &interrupted, 0, StepKind::Think, cut).await;
    let act_failed = interaction(&store, &s, "act failed").await;
    let tool_error = StepOutcome::Failed {
        error: StepError::new(ErrorCode::CapabilityFailed, "no"),
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
    assert_eq!(
        all[0].at, ids[0].created_at,
        "a turn keeps when it was said"
    );
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
            error: StepError::new(ErrorCode::ModelHttp, "x"),
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

    // Usage of a call made outside a step counts like any other.
    store
        .record_usage(UsageRecord {
            step_id: first.id,
            interaction_id: i.id,
            account: p.account,
            team: p.team,
            user: p.user,
            agent_id: AgentId::new("agent"),
            model: "extractor".into(),
            tokens: TokenUsage::new(7, 3),
            cost: Cost::from_nanos(70),
            at: Timestamp::from_millis(5),
        })
        .await
        .unwrap();
    let mine = store
        .usage_totals(&UsageFilter::all().user(p.user))
        .await
        .unwrap();
    assert_eq!(mine.calls, 3);
    assert_eq!(mine.tokens, TokenUsage::new(112, 213));
    assert_eq!(mine.cost, Cost::from_nanos(1120));
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
/// Summaries of a session's older turns: one per turn covered (a second
/// write keeps the first), the newest before a point found, chained through
/// `previous`, deleted with their user.
pub async fn summaries_are_kept_once_per_turn_and_chain<S: Store>(store: S) {
    use crate::session::NewSummary;
    let p = principal();
    let s = session(&store, p, None).await;
    let other = session(&store, p, Some("other")).await;
    let i = interaction(&store, &s, "hello").await;
    let mut first = NewSummary::new(&s, 10, "Ada likes tea.", "gpt-4o-mini", i.id);
    first.tokens = crate::usage::TokenUsage::new(120, 14);
    first.cost = crate::usage::Cost::from_nanos(3_000);
    let stored = store.put_summary(first.clone()).await.unwrap();
    assert_eq!(
        (
            stored.through_seq,
            stored.text.as_str(),
            stored.tokens.input_tokens
        ),
        (10, "Ada likes tea.", 120)
    );
    assert_eq!(stored.cost, crate::usage::Cost::from_nanos(3_000));
    let mut again = first.clone();
    again.text = "something else".into();
    assert_eq!(
        store.put_summary(again).await.unwrap(),
        stored,
        "one summary per turn covered: the first stays"
    );
    let mut second = NewSummary::new(&s, 20, "Ada likes tea and lives in Lyon.", "m", i.id);
    second.previous = Some(stored.id);
    let chained = store.put_summary(second).await.unwrap();
    assert_eq!(chained.previous, Some(stored.id));
    assert_eq!(store.summary(stored.id).await.unwrap(), stored);
    assert!(matches!(
        store.summary(crate::ids::SummaryId::new()).await,
        Err(StoreError::NotFound { .. })
    ));
    let latest = |before| store.latest_summary(s.id, before);
    assert_eq!(latest(10).await.unwrap(), None, "covers only turns before");
    assert_eq!(latest(11).await.unwrap(), Some(stored.clone()));
    assert_eq!(latest(21).await.unwrap().map(|x| x.id), Some(chained.id));
    assert_eq!(store.latest_summary(other.id, 100).await.unwrap(), None);

    let report = store.forget_user(p.account, p.user).await.unwrap();
    assert_eq!(report.summaries, 2);
    assert!(matches!(
        store.summary(stored.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// A 2 × 3 PNG, for image checks.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0,
    2, 0, 0, 0, 3, 8, 2, 0, 0, 0, 0x12, 0x16, 0xf1, 0x4d,
];

pub async fn images_are_stored_once_per_user_and_listed_by_turns<S: Store>(store: S) {
    use crate::image::{ImageFormat, ImageInput, ImageSource, NewImage};
    let p = principal();
    let other = Principal::new(p.account, UserId::new());
    let new = |who, input| NewImage::checked(who, input, 1024).unwrap();
    let first = store
        .put_image(new(p, ImageInput::bytes(PNG)))
        .await
        .unwrap();
    assert_eq!(first.format, Some(ImageFormat::Png));
    assert_eq!(first.size, Some((2, 3)));
    assert_eq!(first.source, ImageSource::Bytes(PNG.into()));
    let again = store
        .put_image(new(p, ImageInput::bytes_of_type(PNG, "image/png")))
        .await
        .unwrap();
    assert_eq!(
        again, first,
        "the same image of the same user is stored once"
    );
    let theirs = store
        .put_image(new(other, ImageInput::bytes(PNG)))
        .await
        .unwrap();
    assert_ne!(theirs.id, first.id, "another user's copy is their own row");
    let url = store
        .put_image(new(p, ImageInput::url("https://example.com/cat.webp")))
        .await
        .unwrap();
    assert_eq!(
        url.source,
        ImageSource::Url("https://example.com/cat.webp".into())
    );
    assert_eq!(url.format, Some(ImageFormat::Webp));
    assert_eq!(url.size, None);
    assert_eq!(store.image(url.id).await.unwrap(), url);
    assert_eq!(store.image(first.id).await.unwrap(), first);
    assert!(matches!(
        store.image(crate::ids::ImageId::new()).await,
        Err(StoreError::NotFound { .. })
    ));

    // An interaction lists its images, and so does its turn in the history.
    let s = session(&store, p, None).await;
    let (i, _) = store
        .create_interaction(NewInteraction {
            session_id: s.id,
            principal: p,
            agent_id: s.agent_id.clone(),
            input: String::new(),
            images: vec![first.id, url.id],
            agent_version: None,
            inbound_id: Some("photo".into()),
            parent_interaction_id: None,
            delegation_depth: 0,
            job_id: None,
            kind: crate::interaction::InteractionKind::Message,
        })
        .await
        .unwrap();
    assert_eq!(i.images, vec![first.id, url.id]);
    assert_eq!(store.interaction(i.id).await.unwrap(), i);
    complete(&store, &i).await;
    let now = interaction(&store, &s, "next").await;
    assert!(now.images.is_empty());
    let turns = store.history(s.id, now.seq, 10).await.unwrap();
    assert_eq!(turns[0].images, vec![first.id, url.id]);
    assert_eq!(turns[0].user, "");

    // Forgetting the user deletes their images and no one else's.
    let report = store.forget_user(p.account, p.user).await.unwrap();
    assert_eq!(report.images, 2);
    assert!(store.image(first.id).await.is_err());
    assert_eq!(store.image(theirs.id).await.unwrap(), theirs);
}
