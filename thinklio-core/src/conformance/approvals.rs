//! Checks of calls that wait for a person: decisions, taken once, and the
//! waits of delegates' callers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::json;

use super::*;

/// A call that waits for a person: the step waits, decisions are stored
/// once (a repeat is the same decision, another one a conflict), a decided
/// step runs again from `waiting`, and the lists show only what nobody has
/// decided yet, within their session or account.
pub async fn approvals_are_decided_once_and_resume_their_step<S: Store>(store: S) {
    use crate::approval::{DecidedBy, Decision, NewDecision};
    use crate::store::ApprovalFilter;
    let p = principal();
    let s = session(&store, p, None).await;
    let other = session(&store, principal(), None).await;
    let i = interaction(&store, &s, "add milk").await;
    let mut act = new_step(&i, 0, StepKind::Act);
    act.mode = StepMode::Interactive;
    let (step, _) = store.begin_step(act).await.unwrap();
    // Deciding about a step that does not wait is a conflict.
    let early = store
        .decide(NewDecision::new(
            step.id,
            Decision::Approve,
            DecidedBy::user(&p),
            "test",
        ))
        .await
        .unwrap_err();
    assert!(matches!(early, StoreError::Conflict(_)), "{early:?}");
    let proposal = json!({ "call": { "id": "c1", "name": "add_todo", "arguments": "{\"text\":\"milk\"}" }, "reason": "draft" });
    let waited = store
        .finish_step(
            &step,
            StepOutcome::Waiting {
                proposal: proposal.clone(),
            },
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(waited.step.state, StepState::Waiting);
    assert_eq!(waited.step.output, Some(proposal));
    assert_eq!(waited.events[0].kind, EventKind::ApprovalRequested);
    assert_eq!(
        waited.events[0].payload["arguments"],
        json!({ "text": "milk" })
    );
    assert_eq!(
        store.unfinished_interactions().await.unwrap(),
        vec![],
        "an undecided interaction holds nothing for recovery"
    );
    let listed = |f| store.waiting_steps(f);
    assert_eq!(
        listed(ApprovalFilter::Session(s.id)).await.unwrap().len(),
        1
    );
    assert_eq!(
        listed(ApprovalFilter::Account(p.account)).await.unwrap()[0].1,
        s.id
    );
    assert!(
        listed(ApprovalFilter::Session(other.id))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        listed(ApprovalFilter::Account(other.principal.account))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(listed(ApprovalFilter::All).await.unwrap().len(), 1);
    // It cannot run before it is decided.
    assert!(matches!(
        store.resume_step(step.id).await,
        Err(StoreError::IllegalTransition { .. })
    ));

    let edit = Decision::Edit {
        arguments: json!({ "text": "oat milk" }),
    };
    let new = || NewDecision::new(step.id, edit.clone(), DecidedBy::user(&p), "test");
    let (stored, event) = store.decide(new()).await.unwrap();
    assert_eq!(stored.decision, edit);
    assert_eq!(stored.interaction_id, i.id);
    assert_eq!(stored.by, DecidedBy::user(&p));
    assert_eq!(event.unwrap().kind, EventKind::ApprovalDecided);
    let (again, none) = store.decide(new()).await.unwrap();
    assert_eq!(
        (again, none),
        (stored.clone(), None),
        "the same decision twice is one"
    );
    let other_way = NewDecision::new(
        step.id,
        Decision::Reject { reason: None },
        DecidedBy::host(p.account),
        "test",
    );
    assert!(matches!(
        store.decide(other_way).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.decision(step.id).await.unwrap(), Some(stored));
    assert!(
        listed(ApprovalFilter::Session(s.id))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.unfinished_interactions().await.unwrap().len(),
        1,
        "a decided interaction goes on"
    );

    let (running, started) = store.resume_step(step.id).await.unwrap();
    assert_eq!(running.state, StepState::Running);
    assert_eq!(started.kind, EventKind::StepStarted);
    // Ended from the copy that still reads `waiting`: the store moves the
    // step from the state it holds.
    let done = store
        .finish_step(&waited.step, ok(json!({ "added": "oat milk" })), None, None)
        .await
        .unwrap();
    assert_eq!(done.step.state, StepState::Succeeded);
    let history = store.step_transitions(step.id).await.unwrap();
    assert_eq!(
        history.iter().map(|t| t.to).collect::<Vec<_>>(),
        vec![
            StepState::Created,
            StepState::Running,
            StepState::Waiting,
            StepState::Running,
            StepState::Succeeded
        ]
    );
    assert!(step::is_legal_history(&history));

    // A rejected proposal ends failed straight from waiting.
    let mut act = new_step(&i, 1, StepKind::Act);
    act.mode = StepMode::Interactive;
    let (second, _) = store.begin_step(act).await.unwrap();
    store
        .finish_step(
            &second,
            StepOutcome::Waiting {
                proposal: json!({}),
            },
            None,
            None,
        )
        .await
        .unwrap();
    store
        .decide(NewDecision::new(
            second.id,
            Decision::Reject {
                reason: Some("no".into()),
            },
            DecidedBy::user(&p),
            "test",
        ))
        .await
        .unwrap();
    assert!(
        store.resume_step(second.id).await.is_err(),
        "a rejected call never runs"
    );
    let refused = StepOutcome::Failed {
        error: StepError::new(ErrorCode::ApprovalRejected, "no"),
        usage: None,
    };
    let failed = store
        .finish_step(&second, refused, None, None)
        .await
        .unwrap();
    assert_eq!(failed.step.state, StepState::Failed);
    let history = store.step_transitions(second.id).await.unwrap();
    assert_eq!(
        history.last().map(|t| (t.from, t.to)),
        Some((Some(StepState::Waiting), StepState::Failed))
    );
    assert!(step::is_legal_history(&history), "{history:?}");

    // Forgetting the user forgets the decisions about their interactions.
    store.forget_user(p.account, p.user).await.unwrap();
    assert_eq!(store.decision(step.id).await.unwrap(), None);
}

/// A call deep in a delegation tree that waits holds every interaction
/// above it until it is decided; the callers' waits are not listed as
/// approvals and resume without a decision of their own. A session's
/// chosen approval mode is stored and cleared.
pub async fn a_delegate_waiting_holds_its_callers_until_decided<S: Store>(store: S) {
    use crate::approval::{ApprovalMode, DecidedBy, Decision, NewDecision};
    use crate::store::ApprovalFilter;
    let p = principal();
    let s = session(&store, p, None).await;
    let root = interaction(&store, &s, "delegate").await;
    let child_of = |parent: &Interaction| crate::interaction::NewInteraction {
        session_id: s.id,
        principal: p,
        agent_id: AgentId::new("helper"),
        input: "task".into(),
        images: Vec::new(),
        agent_version: None,
        inbound_id: Some(format!("{}:act", parent.id)),
        parent_interaction_id: Some(parent.id),
        delegation_depth: parent.delegation_depth + 1,
        job_id: None,
        kind: crate::interaction::InteractionKind::Message,
    };
    let (child, _) = store.create_interaction(child_of(&root)).await.unwrap();
    let (grandchild, _) = store.create_interaction(child_of(&child)).await.unwrap();
    let later = interaction(&store, &s, "meanwhile").await;
    let wait = |i: &Interaction, mode: StepMode| {
        let mut act = new_step(i, 0, StepKind::Act);
        act.mode = mode;
        act
    };
    let (proposed, _) = store
        .begin_step(wait(&grandchild, StepMode::Interactive))
        .await
        .unwrap();
    let requested = store
        .finish_step(
            &proposed,
            StepOutcome::Waiting {
                proposal: json!({ "call": { "id": "c1", "name": "add_todo", "arguments": "{}" }, "reason": "draft" }),
            },
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(requested.events[0].kind, EventKind::ApprovalRequested);
    let mut callers = Vec::new();
    for i in [&child, &root] {
        let (step, _) = store
            .begin_step(wait(i, StepMode::Immediate))
            .await
            .unwrap();
        let waited = store
            .finish_step(
                &step,
                StepOutcome::Waiting {
                    proposal: json!({ "call": { "id": "d1", "name": "ask_helper", "arguments": "{}" }, "reason": "delegate", "waiting_on": [proposed.id] }),
                },
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(waited.step.state, StepState::Waiting);
        assert_eq!(
            waited.events[0].kind,
            EventKind::StepWaiting,
            "a caller's wait is not an approval request"
        );
        callers.push(step.id);
    }
    let unfinished: Vec<_> = store
        .unfinished_interactions()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(
        unfinished,
        vec![later.id],
        "the undecided call holds its whole chain; a later message is not held"
    );
    let listed = store
        .waiting_steps(ApprovalFilter::Session(s.id))
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|(step, _)| step.id).collect::<Vec<_>>(),
        vec![proposed.id],
        "only the call itself is decided"
    );
    store
        .decide(NewDecision::new(
            proposed.id,
            Decision::Approve,
            DecidedBy::user(&p),
            "test",
        ))
        .await
        .unwrap();
    let unfinished: std::collections::BTreeSet<_> = store
        .unfinished_interactions()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(
        unfinished,
        [root.id, child.id, grandchild.id, later.id].into(),
        "decided, the chain goes on"
    );
    // A caller's wait resumes with no decision of its own.
    let (resumed, _) = store.resume_step(callers[1]).await.unwrap();
    assert_eq!(resumed.state, StepState::Running);

    // The session's approval mode.
    assert_eq!(s.approval_mode, None);
    let set = store
        .set_session_approval_mode(s.id, Some(ApprovalMode::Observe))
        .await
        .unwrap();
    assert_eq!(set.approval_mode, Some(ApprovalMode::Observe));
    assert_eq!(
        store.session(s.id).await.unwrap().approval_mode,
        Some(ApprovalMode::Observe)
    );
    let cleared = store.set_session_approval_mode(s.id, None).await.unwrap();
    assert_eq!(cleared, s, "cleared, it is the session as opened");
    assert!(matches!(
        store
            .set_session_approval_mode(SessionId::new(), Some(ApprovalMode::Draft))
            .await,
        Err(StoreError::NotFound { .. })
    ));
}
