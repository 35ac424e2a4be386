//! Checks of todos, budgets, usage reports, privacy and the directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::json;

use super::*;

pub async fn todos_belong_to_their_owner<S: Store + TodoStore>(store: S) {
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
    let user = BudgetLimit::monthly(Scope::User(p.user), Cost::from_usd(1.0));
    let account = BudgetLimit::monthly(Scope::Account(p.account), Cost::from_usd(5.0))
        .tokens(2_000_000)
        .per(BudgetPeriod::Daily)
        .warn_at([25, 75]);
    let team = BudgetLimit::monthly_tokens(Scope::Team(TeamId::new()), 1_000);
    store.set_budget(team.clone()).await.unwrap();
    store.set_budget(user.clone()).await.unwrap();
    store.set_budget(account.clone()).await.unwrap();
    let raised = BudgetLimit::monthly(Scope::User(p.user), Cost::from_usd(2.0));
    store.set_budget(raised.clone()).await.unwrap();
    let mut all = store.budgets().await.unwrap();
    all.sort_by_key(|b| b.scope.kind());
    assert_eq!(
        all,
        vec![account.clone(), team.clone(), raised],
        "one limit per scope, the latest; money, tokens or both"
    );
    assert!(store.remove_budget(team.scope).await.unwrap());
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
            images: Vec::new(),
            agent_version: None,
            inbound_id: None,
            parent_interaction_id: None,
            delegation_depth: 0,
            job_id: None,
            kind: crate::interaction::InteractionKind::Message,
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

pub async fn forgetting_a_user_removes_what_they_own<S: Store + TodoStore>(store: S) {
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
            Scope::User(gone.user),
            Cost::from_usd(1.0),
        ))
        .await
        .unwrap();
    let before = store
        .usage_totals(&UsageFilter::all().account(account))
        .await
        .unwrap();
    // A job of each user, the gone one's with a subjob and a notice waiting.
    let job_of = |p: Principal, i: &Interaction, parent: Option<JobId>| NewJob {
        parent_id: parent,
        session_id: i.session_id,
        interaction_id: i.id,
        step_id: None,
        principal: p,
        capability: "research".into(),
        input: json!({ "topic": "the gone user's secret" }),
        usefulness: Usefulness::AllSubjobs,
        deadline: None,
        observers: vec![ObserverKind::FollowUp],
        key: None,
    };
    let their_job = store
        .create_job(job_of(gone, &theirs, None), t(1))
        .await
        .unwrap();
    store
        .create_job(job_of(gone, &theirs, Some(their_job.id)), t(1))
        .await
        .unwrap();
    let kept_job = store
        .create_job(job_of(stays, &kept, None), t(1))
        .await
        .unwrap();
    store
        .update_job(their_job.id, JobChange::to(JobState::Dispatched), t(2))
        .await
        .unwrap();
    assert!(
        store
            .due_notifications(Timestamp::from_millis(i64::MAX), 1000)
            .await
            .unwrap()
            .iter()
            .any(|n| n.observer.job_id == their_job.id),
        "a notice of their job waits"
    );
    // Tasks: one about each user, one of the host's.
    for owner in [Some(gone.user), Some(stays.user), None] {
        let mut task = NewTask::new("forget.check", json!({ "about": owner }), t(0));
        if let Some(user) = owner {
            task = task.owned_by(account, user);
        }
        store.enqueue(task).await.unwrap();
    }
    // Their place in the directory.
    let team = TeamId::new();
    store
        .put_account(account, "A", AccountPolicy::default())
        .await
        .unwrap();
    store.put_team(account, team, "t").await.unwrap();
    for p in [gone, stays] {
        store
            .set_member(account, p.user, AccountRole::Editor)
            .await
            .unwrap();
        store.add_to_team(team, p.user).await.unwrap();
    }
    let agent = AgentId::new("forget-agent");
    store.set_agent_owner(&agent, account).await.unwrap();
    store
        .assign(Assignment {
            agent_id: agent.clone(),
            scope: Scope::User(gone.user),
            capabilities: None,
            approval_mode: None,
        })
        .await
        .unwrap();

    let report = store.forget_user(account, gone.user).await.unwrap();
    assert_eq!(
        (
            report.sessions,
            report.interactions,
            report.usage_anonymized,
            report.todos,
            report.jobs,
            report.tasks,
            report.memberships,
        ),
        (1, 1, 1, 1, 2, 1, 3)
    );
    assert!(matches!(
        store.job(their_job.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store
            .due_notifications(Timestamp::from_millis(i64::MAX), 1000)
            .await
            .unwrap()
            .iter()
            .all(|n| n.observer.job_id != their_job.id),
        "no notice of their job is left"
    );
    assert_eq!(store.job(kept_job.id).await.unwrap().principal, stays);
    let mut left = Vec::new();
    while let Some(task) = store
        .claim(
            t(10),
            std::time::Duration::from_secs(60),
            &["forget.check".to_owned()],
        )
        .await
        .unwrap()
    {
        left.push(task.payload["about"].clone());
    }
    left.sort_by_key(|v| v.to_string());
    assert_eq!(
        left,
        [json!(stays.user), json!(null)],
        "only the gone user's task is gone"
    );
    assert_eq!(store.role(account, gone.user).await.unwrap(), None);
    assert_eq!(
        store.role(account, stays.user).await.unwrap(),
        Some(AccountRole::Editor)
    );
    assert!(matches!(
        store.access(&gone.with_team(team), &agent).await.unwrap(),
        Err(AccessError::NotAMember { .. })
    ));
    assert!(
        matches!(
            store.add_to_team(team, gone.user).await,
            Err(StoreError::Conflict(_))
        ),
        "no longer a member of the account"
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
    assert_eq!(store.agent_owner(&helper).await.unwrap(), None);
    store.set_agent_owner(&helper, x).await.unwrap();
    store.set_agent_owner(&helper, x).await.unwrap();
    assert!(
        matches!(
            store.set_agent_owner(&helper, y).await,
            Err(StoreError::Conflict(_))
        ),
        "an agent never moves to another account"
    );
    assert_eq!(store.agent_owner(&helper).await.unwrap(), Some(x));
    assert_eq!(store.account_policy(x).await.unwrap(), policy);
    assert!(matches!(
        store.account_policy(AccountId::new()).await,
        Err(StoreError::NotFound { .. })
    ));
    let ceiling = AccountPolicy {
        max_trust_level: Some(TrustLevel::Elevated),
        approval_mode: Some(crate::approval::ApprovalMode::Observe),
        approval_role: Some(AccountRole::Editor),
        ..policy.clone()
    };
    store.put_account(x, "X", ceiling.clone()).await.unwrap();
    assert_eq!(store.account_policy(x).await.unwrap(), ceiling);
    store.put_account(x, "X", policy.clone()).await.unwrap();

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
            scope: Scope::Account(x),
            capabilities: None,
            approval_mode: None,
        })
        .await
        .unwrap();
    store
        .assign(Assignment {
            agent_id: helper.clone(),
            scope: Scope::Team(team),
            capabilities: Some(narrowed.clone()),
            approval_mode: Some(crate::approval::ApprovalMode::Draft),
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
    assert_eq!(plain.approval_ceiling(), None);
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
    assert_eq!(
        in_team.approval_ceiling(),
        Some(crate::approval::ApprovalMode::Draft),
        "and sets its approval mode"
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

pub async fn stored_agents_are_versioned_owned_and_have_a_lifecycle<S: Store>(store: S) {
    use crate::catalog::{AgentState, NewAgentVersion};
    let (acme, globex) = (AccountId::new(), AccountId::new());
    store
        .put_account(acme, "Acme", AccountPolicy::default())
        .await
        .unwrap();
    store
        .put_account(globex, "Globex", AccountPolicy::default())
        .await
        .unwrap();
    let editor = UserId::new();
    let first = AgentDefinition::new("helper", "gpt-4o-mini").system_prompt("One.");
    let v1 = store
        .put_agent(NewAgentVersion::new(acme, first.clone(), Some(editor)).expecting(0))
        .await
        .unwrap();
    assert_eq!(
        (v1.version, v1.state, v1.account),
        (1, AgentState::Active, acme)
    );
    assert_eq!(v1.definition, first, "the definition reads back whole");
    assert_eq!(store.agent_owner(&first.id).await.unwrap(), Some(acme));

    // Every change is a new version; the stale writer is refused.
    let second = first.clone().system_prompt("Two.");
    let v2 = store
        .put_agent(NewAgentVersion::new(acme, second.clone(), None).expecting(1))
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.created_at, v1.created_at);
    assert!(matches!(
        store
            .put_agent(NewAgentVersion::new(acme, first.clone(), None).expecting(1))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .put_agent(NewAgentVersion::new(acme, first.clone(), None).expecting(0))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let versions = store.agent_versions(&first.id).await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.definition.system_prompt.as_str(), v.by))
            .collect::<Vec<_>>(),
        [(1, "One.", Some(editor)), (2, "Two.", None)]
    );
    assert_eq!(
        store.agent_version(&first.id, 1).await.unwrap(),
        versions[0]
    );
    assert!(matches!(
        store.agent_version(&first.id, 3).await,
        Err(StoreError::NotFound { .. })
    ));

    // Another account can neither replace it nor see it among its own.
    assert!(matches!(
        store
            .put_agent(NewAgentVersion::new(globex, second.clone(), None))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .stored_agent(&first.id)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert!(store.stored_agents(globex).await.unwrap().is_empty());
    assert_eq!(
        store.stored_agents(acme).await.unwrap(),
        std::slice::from_ref(&v2)
    );
    // An agent the directory gave an account before is that account's.
    store
        .set_agent_owner(&AgentId::new("legacy"), globex)
        .await
        .unwrap();
    assert!(matches!(
        store
            .put_agent(NewAgentVersion::new(
                acme,
                AgentDefinition::new("legacy", "m"),
                None
            ))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // An unknown account owns nothing.
    assert!(matches!(
        store
            .put_agent(NewAgentVersion::new(
                AccountId::new(),
                AgentDefinition::new("orphan", "m"),
                None
            ))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.stored_agent(&AgentId::new("orphan")).await.unwrap(),
        None
    );

    // Paused, resumed, archived; archived for good.
    let paused = store
        .set_agent_state(&first.id, AgentState::Paused)
        .await
        .unwrap();
    assert_eq!((paused.state, paused.version), (AgentState::Paused, 2));
    // A change while paused keeps it paused.
    let changed = store
        .put_agent(NewAgentVersion::new(acme, first.clone(), None))
        .await
        .unwrap();
    assert_eq!((changed.state, changed.version), (AgentState::Paused, 3));
    store
        .set_agent_state(&first.id, AgentState::Active)
        .await
        .unwrap();
    let archived = store
        .set_agent_state(&first.id, AgentState::Archived)
        .await
        .unwrap();
    assert_eq!(archived.state, AgentState::Archived);
    assert!(matches!(
        store.set_agent_state(&first.id, AgentState::Active).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .put_agent(NewAgentVersion::new(acme, first.clone(), None))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .set_agent_state(&AgentId::new("nobody"), AgentState::Paused)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.agent_versions(&first.id).await.unwrap().len(), 3);
}

pub async fn templates_are_versioned_and_owned_and_agents_keep_their_origin<S: Store>(store: S) {
    use crate::catalog::{AgentOrigin, AgentOverrides, NewAgentVersion, NewTemplate, TemplateSpec};
    use crate::ids::TemplateId;
    let (acme, globex) = (AccountId::new(), AccountId::new());
    for (a, name) in [(acme, "Acme"), (globex, "Globex")] {
        store
            .put_account(a, name, AccountPolicy::default())
            .await
            .unwrap();
    }
    let id = TemplateId::new("desk");
    let spec =
        TemplateSpec::new(AgentDefinition::new("desk", "gpt-4o-mini").system_prompt("Help."))
            .description("A help desk.")
            .knows("Opening hours are 9 to 5.");
    let v1 = store
        .put_template(NewTemplate::new(id.clone(), acme, spec.clone()).expecting(0))
        .await
        .unwrap();
    assert_eq!((v1.version, v1.account), (1, acme));
    assert_eq!(v1.spec, spec, "the template reads back whole");
    let changed = TemplateSpec::new(spec.definition.clone().system_prompt("Help more."));
    let v2 = store
        .put_template(NewTemplate::new(id.clone(), acme, changed.clone()).expecting(1))
        .await
        .unwrap();
    assert_eq!((v2.version, v2.created_at), (2, v1.created_at));
    // A stale writer, a second creation and another account are refused.
    for stale in [1, 0] {
        assert!(matches!(
            store
                .put_template(NewTemplate::new(id.clone(), acme, spec.clone()).expecting(stale))
                .await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert!(matches!(
        store
            .put_template(NewTemplate::new(id.clone(), globex, spec.clone()))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.template(&id).await.unwrap().unwrap(), v2);
    assert_eq!(
        store.templates(acme).await.unwrap(),
        std::slice::from_ref(&v2)
    );
    assert!(store.templates(globex).await.unwrap().is_empty());

    // An agent made from it keeps its origin for good, and the template
    // version it follows until an edit.
    let origin = AgentOrigin::Template {
        template: id.clone(),
        overrides: AgentOverrides::none().model("claude-sonnet-4-5"),
    };
    let made = store
        .put_agent(
            NewAgentVersion::new(
                acme,
                AgentDefinition::new("desk-1", "claude-sonnet-4-5"),
                None,
            )
            .expecting(0)
            .from_origin(origin.clone())
            .from_template_version(2),
        )
        .await
        .unwrap();
    assert_eq!(made.origin.as_ref(), Some(&origin));
    assert_eq!(made.template_version, Some(2));
    assert!(!made.diverged_from(&id));
    let synced = store
        .put_agent(
            NewAgentVersion::new(acme, made.definition.clone(), None)
                .from_origin(AgentOrigin::Clone {
                    parent: AgentId::new("ignored"),
                    parent_version: 1,
                })
                .from_template_version(3),
        )
        .await
        .unwrap();
    assert_eq!(
        (synced.origin.as_ref(), synced.template_version),
        (Some(&origin), Some(3)),
        "the origin is written once; the template version with each version"
    );
    let edited = store
        .put_agent(NewAgentVersion::new(acme, made.definition.clone(), None))
        .await
        .unwrap();
    assert_eq!(edited.template_version, None);
    assert!(edited.diverged_from(&id));
    assert_eq!(
        store.stored_agents(acme).await.unwrap(),
        std::slice::from_ref(&edited)
    );
    // A clone's parent is kept.
    let clone = store
        .put_agent(
            NewAgentVersion::new(acme, AgentDefinition::new("desk-2", "m"), None).from_origin(
                AgentOrigin::Clone {
                    parent: AgentId::new("desk-1"),
                    parent_version: 4,
                },
            ),
        )
        .await
        .unwrap();
    assert!(matches!(
        &clone.origin,
        Some(AgentOrigin::Clone { parent, parent_version: 4 }) if parent.as_str() == "desk-1"
    ));
    assert_eq!(clone.template(), None);

    // Deleting a template leaves its agents as they are.
    assert!(store.delete_template(&id).await.unwrap());
    assert!(!store.delete_template(&id).await.unwrap());
    assert_eq!(store.template(&id).await.unwrap(), None);
    assert_eq!(
        store
            .stored_agent(&AgentId::new("desk-1"))
            .await
            .unwrap()
            .unwrap()
            .template(),
        Some(&id)
    );

    // The sessions an agent serves, oldest first, whoever they belong to.
    let (alice, bob) = (
        Principal::new(acme, UserId::new()),
        Principal::new(globex, UserId::new()),
    );
    let mut opened = Vec::new();
    for (p, agent) in [(alice, "desk-1"), (bob, "desk-1"), (alice, "other")] {
        opened.push(
            store
                .open_session(NewSession {
                    principal: p,
                    agent_id: AgentId::new(agent),
                    channel: "test".into(),
                    key: None,
                })
                .await
                .unwrap(),
        );
    }
    let of_agent = store
        .sessions_of_agent(&AgentId::new("desk-1"), 10)
        .await
        .unwrap();
    assert_eq!(of_agent, opened[..2]);
    assert_eq!(
        store
            .sessions_of_agent(&AgentId::new("desk-1"), 1)
            .await
            .unwrap(),
        opened[..1]
    );
}
