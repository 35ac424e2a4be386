//! Agents as data: an agent put through the directory is stored with a
//! version per change, survives a restart, runs each interaction with the
//! version it started with, refuses new messages while paused or archived,
//! and, on PostgreSQL, is served by every worker as soon as it changes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use thinklio_core::approval::{ApprovalMode, Decision};
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use thinklio_tests::until;

/// Answers with the system prompt it was given; `note X` calls `note`.
fn prompt_echo() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        let prompt = r
            .messages
            .iter()
            .find(|m| m.role == Role::System)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        if last.role == Role::User
            && let Some(what) = last.content.strip_prefix("note ")
        {
            return ScriptedReply::tool_call("n1", "note", json!({ "text": what }).to_string());
        }
        ScriptedReply::text(format!("[{prompt}]"))
    })
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Note {
    /// What to note.
    text: String,
}

fn note() -> FunctionCapability {
    FunctionCapability::builder("note", "Notes something down.")
        .handler(|n: Note| async move { Ok::<_, String>(json!({ "noted": n.text })) })
}

fn runtime_on(store: Arc<dyn Store>, shared: bool) -> Runtime {
    let mut config = RuntimeConfig::default();
    config.shared_store = shared;
    Runtime::builder()
        .store_arc(store)
        .model(prompt_echo())
        .capability(note())
        .agent(AgentDefinition::new("coded", "m").system_prompt("in code"))
        .config(config)
        .build()
        .unwrap()
}

fn helper(prompt: &str) -> AgentDefinition {
    AgentDefinition::new("helper", "m")
        .system_prompt(prompt)
        .capabilities(["note"])
        .approval_mode(ApprovalMode::Draft)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_agent_keeps_its_versions_and_its_lifecycle_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.db");
    let acme = AccountId::new();
    let (ada, vic) = (
        Principal::new(acme, UserId::new()),
        Principal::new(acme, UserId::new()),
    );
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    store
        .put_account(acme, "Acme", AccountPolicy::default())
        .await
        .unwrap();
    store
        .set_member(acme, ada.user, AccountRole::Editor)
        .await
        .unwrap();
    store
        .set_member(acme, vic.user, AccountRole::Viewer)
        .await
        .unwrap();
    let rt = runtime_on(Arc::clone(&store), false);
    let directory = rt.directory();

    let v1 = directory.put_agent(ada, helper("first")).await.unwrap();
    assert_eq!(v1.version, 1);
    // Viewers read, never write; code agents are read-only.
    assert_eq!(
        directory
            .put_agent(vic, helper("mine"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryRoleTooLow
    );
    assert_eq!(
        directory.agent(vic, &AgentId::new("helper")).await.unwrap(),
        v1
    );
    assert_eq!(
        directory
            .put_agent(ada, AgentDefinition::new("coded", "m"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryHostAgent
    );

    let s = rt.open_session(ada, "helper", "chat", None).await.unwrap();
    let reply = rt.send(s.id, "hello").await.unwrap();
    assert_eq!(reply.text, "[first]");
    let first = rt
        .sessions()
        .interaction(ada, reply.interaction_id)
        .await
        .unwrap();
    assert_eq!(first.agent_version, Some(1));

    // A call proposed under version 1 waits; version 2 is put meanwhile.
    let waiting = rt.send(s.id, "note milk").await.unwrap();
    assert_eq!(waiting.waiting.len(), 1);
    let stale = directory
        .update_agent(ada, helper("stale"), 0)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), ErrorCode::StoreConflict, "{stale}");
    let v2 = directory
        .update_agent(ada, helper("second"), 1)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    drop(rt);

    // A new process: the agent is served from the store.
    let rt = runtime_on(Arc::clone(&store), false);
    // Its proposal keeps the agent's own timeout, though this process has
    // not served the agent yet.
    assert_eq!(rt.approvals().expire_due().await.unwrap(), 0);
    rt.approvals()
        .decide(ada, waiting.waiting[0], Decision::Approve, "test")
        .await
        .unwrap();
    let resumed = rt
        .sessions()
        .reply(ada, waiting.interaction_id)
        .await
        .unwrap();
    assert_eq!(
        resumed.map(|r| r.text),
        Some("[first]".to_owned()),
        "the interaction goes on with the version it started with"
    );
    assert_eq!(rt.send(s.id, "hello").await.unwrap().text, "[second]");

    // Paused: new messages and sessions are refused, and come back on resume.
    let directory = rt.directory();
    let helper_id = AgentId::new("helper");
    directory
        .set_agent_state(ada, &helper_id, AgentState::Paused)
        .await
        .unwrap();
    assert_eq!(
        rt.send(s.id, "anyone?").await.unwrap_err().code(),
        ErrorCode::AgentPaused
    );
    assert_eq!(
        rt.open_session(ada, "helper", "chat", Some("k"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::AgentPaused
    );
    assert_eq!(
        directory
            .set_agent_state(vic, &helper_id, AgentState::Active)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryRoleTooLow
    );
    directory
        .set_agent_state(ada, &helper_id, AgentState::Active)
        .await
        .unwrap();
    assert_eq!(rt.send(s.id, "back").await.unwrap().text, "[second]");
    // Archived: no new work, for good; its history stays.
    directory
        .set_agent_state(ada, &helper_id, AgentState::Archived)
        .await
        .unwrap();
    assert_eq!(
        rt.send(s.id, "hello?").await.unwrap_err().code(),
        ErrorCode::AgentArchived
    );
    assert_eq!(
        directory
            .set_agent_state(ada, &helper_id, AgentState::Active)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::StoreConflict
    );
    assert_eq!(rt.sessions().history(ada, s.id, 10).await.unwrap().len(), 4);
    let versions = directory.agent_versions(ada, &helper_id).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(versions[0].by, Some(ada.user));

    // Another account sees none of it.
    let eve = Principal::new(AccountId::new(), UserId::new());
    assert_eq!(
        directory.agent(eve, &helper_id).await.unwrap_err().code(),
        ErrorCode::DirectoryForeignAgent
    );
    assert!(directory.agents(eve).await.unwrap().is_empty());
    // Nor talks to it, enforced directory or not.
    assert_eq!(
        rt.open_session(eve, "helper", "chat", None)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryForeignAgent
    );
    assert_eq!(directory.agents(ada).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_agent_changed_through_one_worker_is_served_by_every_worker() {
    assert!(
        std::env::var_os("THINKLIO_POSTGRES_URL").is_some(),
        "THINKLIO_POSTGRES_URL is not set: run scripts/postgres.sh start (scripts/test.sh does)"
    );
    let schema = format!("agents_{}", uuid::Uuid::now_v7().simple());
    let store = thinklio_tests::open_store(&format!("postgres:{schema}"))
        .await
        .unwrap();
    let acme = AccountId::new();
    store
        .put_account(acme, "Acme", AccountPolicy::default())
        .await
        .unwrap();
    let ada = Principal::new(acme, UserId::new());
    let (a, b) = (
        runtime_on(Arc::clone(&store), true),
        runtime_on(Arc::clone(&store), true),
    );
    let autopilot = |prompt: &str| helper(prompt).approval_mode(ApprovalMode::Autopilot);

    // Created through A, answered through B.
    a.directory()
        .put_agent(Actor::Account(acme), autopilot("made on A"))
        .await
        .unwrap();
    let s = b.open_session(ada, "helper", "chat", None).await.unwrap();
    assert_eq!(b.send(s.id, "hi").await.unwrap().text, "[made on A]");

    // Changed through B: A's next interaction runs the new version.
    b.directory()
        .put_agent(Actor::Account(acme), autopilot("changed on B"))
        .await
        .unwrap();
    let reply = a.send(s.id, "hi again").await.unwrap();
    assert_eq!(reply.text, "[changed on B]");
    let interaction = a
        .sessions()
        .interaction(ada, reply.interaction_id)
        .await
        .unwrap();
    assert_eq!(interaction.agent_version, Some(2));

    // A worker of A runs what B submits, with the version B saw.
    let worker = a.spawn_interaction_worker(Duration::from_millis(25), 2);
    let submitted = b.submit(s.id, "by the worker").await.unwrap();
    until("A's worker answers", || async {
        b.sessions().state(ada, submitted.id).await.unwrap() == InteractionState::Completed
    })
    .await;
    assert_eq!(
        b.sessions()
            .reply(ada, submitted.id)
            .await
            .unwrap()
            .map(|r| r.text),
        Some("[changed on B]".to_owned())
    );
    worker.stop().await;

    // Archived through A: no new messages anywhere.
    a.directory()
        .set_agent_state(
            Actor::Account(acme),
            &AgentId::new("helper"),
            AgentState::Archived,
        )
        .await
        .unwrap();
    for rt in [&a, &b] {
        assert_eq!(
            rt.send(s.id, "still there?").await.unwrap_err().code(),
            ErrorCode::AgentArchived
        );
        assert_eq!(
            rt.submit(s.id, "queued?").await.unwrap_err().code(),
            ErrorCode::AgentArchived
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_of_a_stored_agent_shows_whom_it_may_call_and_nothing_of_other_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("graph.db"))
        .await
        .unwrap();
    let (acme, globex) = (AccountId::new(), AccountId::new());
    for (a, name) in [(acme, "Acme"), (globex, "Globex")] {
        store
            .put_account(a, name, AccountPolicy::default())
            .await
            .unwrap();
    }
    let rt = Runtime::builder()
        .store(store)
        .model(prompt_echo())
        .agent(AgentDefinition::new("researcher", "m"))
        .delegate(Delegate::new(
            "researcher",
            "ask_researcher",
            "Asks the researcher.",
        ))
        .build()
        .unwrap();
    let directory = rt.directory();
    directory
        .put_agent(
            Actor::Account(acme),
            AgentDefinition::new("helper", "m").capabilities(["ask_researcher"]),
        )
        .await
        .unwrap();
    directory
        .put_agent(
            Actor::Account(globex),
            AgentDefinition::new("rival", "m").capabilities(["ask_researcher"]),
        )
        .await
        .unwrap();
    let graph = directory
        .agent_graph(Actor::Account(acme), &AgentId::new("helper"))
        .await
        .unwrap();
    assert_eq!(
        graph.agents.keys().map(AgentId::as_str).collect::<Vec<_>>(),
        ["helper", "researcher"]
    );
    assert_eq!(
        graph.edges,
        [(
            AgentId::new("helper"),
            "ask_researcher".to_owned(),
            AgentId::new("researcher")
        )]
    );
    assert!(
        graph
            .to_mermaid()
            .contains("helper -->|ask_researcher| researcher")
    );
    // Names are data now: quotes and pipes cannot end a label.
    let odd = "a\"b|c]";
    directory
        .put_agent(Actor::Account(acme), AgentDefinition::new(odd, "m"))
        .await
        .unwrap();
    let graph = directory
        .agent_graph(Actor::Account(acme), &AgentId::new(odd))
        .await
        .unwrap();
    assert!(
        graph.to_dot().contains(r#""a\"b|c]" [label="a\"b|c]\nmax"#),
        "{}",
        graph.to_dot()
    );
    assert!(
        graph
            .to_mermaid()
            .contains("[\"a#quot;b#124;c#93; (max depth 3)\"]"),
        "{}",
        graph.to_mermaid()
    );
    // The code agent's graph, seen by Acme, leaves Globex's agent out (it
    // does not call it; it is not reachable), and Globex's agent is not
    // Acme's to see.
    let code = directory
        .agent_graph(Actor::Account(acme), &AgentId::new("researcher"))
        .await
        .unwrap();
    assert_eq!(code.agents.len(), 1);
    assert_eq!(
        directory
            .agent_graph(Actor::Account(acme), &AgentId::new("rival"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryForeignAgent
    );
}

/// `lead` asks its researcher; the researcher says which tools it was
/// offered, or, asked to go deeper, asks its clerk.
fn team_model() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let prompt = r
            .messages
            .iter()
            .find(|m| m.role == Role::System)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let last = r.messages.last().unwrap();
        match (prompt.as_str(), last.role) {
            ("lead", Role::User) => ScriptedReply::tool_call(
                "d1",
                "ask_researcher",
                json!({ "task": last.content }).to_string(),
            ),
            ("researcher", Role::User) if last.content.contains("deeper") => {
                ScriptedReply::tool_call(
                    "d2",
                    "ask_clerk",
                    json!({ "task": "file it" }).to_string(),
                )
            }
            ("researcher", Role::User) => {
                let mut names: Vec<&str> = r.tools.iter().map(|t| t.name.as_str()).collect();
                names.sort_unstable();
                ScriptedReply::text(format!("offered: {}", names.join(", ")))
            }
            (_, Role::Tool) => ScriptedReply::text(format!("got: {}", last.content)),
            _ => ScriptedReply::text("filed"),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegations_kept_as_data_narrow_their_delegate_and_refuse_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("team.db")).await.unwrap();
    let (acme, globex) = (AccountId::new(), AccountId::new());
    for (a, name) in [(acme, "Acme"), (globex, "Globex")] {
        store
            .put_account(a, name, AccountPolicy::default())
            .await
            .unwrap();
    }
    let shout = FunctionCapability::builder("shout", "Shouts.")
        .handler(|n: Note| async move { Ok::<_, String>(json!(n.text.to_uppercase())) });
    let rt = Runtime::builder()
        .store(store)
        .model(team_model())
        .capability(note())
        .capability(shout)
        .build()
        .unwrap();
    let directory = rt.directory();
    let host = Actor::Account(acme);
    directory
        .put_agent(
            host,
            AgentDefinition::new("clerk", "m").system_prompt("clerk"),
        )
        .await
        .unwrap();
    directory
        .put_agent(
            host,
            AgentDefinition::new("researcher", "m")
                .system_prompt("researcher")
                .capabilities(["note", "shout"])
                .delegate_to(DelegateTo::new("clerk", "ask_clerk", "Asks the clerk.")),
        )
        .await
        .unwrap();
    // The lead may call the researcher, who may then use `note` and
    // `ask_clerk` only (not `shout`), and delegate no further.
    let lead = directory
        .put_agent(
            host,
            AgentDefinition::new("lead", "m")
                .system_prompt("lead")
                .delegate_to(
                    DelegateTo::new("researcher", "ask_researcher", "Asks the researcher.")
                        .only(["note", "ask_clerk"])
                        .max_depth(0),
                ),
        )
        .await
        .unwrap();
    assert!(
        lead.definition
            .capabilities
            .contains(&"ask_researcher".to_owned())
    );
    let ada = Principal::new(acme, UserId::new());
    let s = rt.open_session(ada, "lead", "chat", None).await.unwrap();
    let reply = rt.send(s.id, "what can you use?").await.unwrap();
    assert_eq!(reply.text, "got: offered: ask_clerk, note");
    // The delegation is in the steps: the lead's act called the researcher.
    let steps = rt
        .sessions()
        .steps(ada, reply.interaction_id)
        .await
        .unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s.kind == StepKind::Act && s.capability.as_deref() == Some("ask_researcher"))
    );
    // Through this delegation the researcher cannot go deeper.
    let reply = rt.send(s.id, "go deeper").await.unwrap();
    assert!(
        reply.text.contains("delegation.depth_exceeded")
            || reply.text.contains("beyond this chain's limit"),
        "{}",
        reply.text
    );
    // Called directly, the researcher has all it has and may delegate.
    let direct = rt
        .open_session(ada, "researcher", "chat", None)
        .await
        .unwrap();
    assert_eq!(
        rt.send(direct.id, "what can you use?").await.unwrap().text,
        "offered: ask_clerk, note, shout"
    );
    assert_eq!(
        rt.send(direct.id, "go deeper").await.unwrap().text,
        "got: filed"
    );

    // A change that would close a circle is refused, naming it.
    let circle = directory
        .put_agent(
            host,
            AgentDefinition::new("clerk", "m")
                .system_prompt("clerk")
                .delegate_to(DelegateTo::new("lead", "ask_lead", "Asks the lead.")),
        )
        .await
        .unwrap_err();
    assert_eq!(circle.code(), ErrorCode::DelegationCycle);
    for agent in ["lead", "researcher", "clerk"] {
        assert!(circle.to_string().contains(agent), "{circle}");
    }
    assert_eq!(
        directory
            .agent(host, &AgentId::new("clerk"))
            .await
            .unwrap()
            .version,
        1,
        "nothing was stored"
    );
    // Another account's agent is no one's delegate but its own account's.
    let foreign = directory
        .put_agent(
            Actor::Account(globex),
            AgentDefinition::new("spy", "m").delegate_to(DelegateTo::new(
                "researcher",
                "ask_them",
                "",
            )),
        )
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), ErrorCode::DirectoryForeignAgent);
}

/// An account with an editor, a viewer and a team, on SQLite.
async fn account_on(store: &Arc<dyn Store>) -> (AccountId, Principal, Principal, TeamId) {
    let acme = AccountId::new();
    let (ada, vic) = (
        Principal::new(acme, UserId::new()),
        Principal::new(acme, UserId::new()),
    );
    store
        .put_account(acme, "Acme", AccountPolicy::default())
        .await
        .unwrap();
    store
        .set_member(acme, ada.user, AccountRole::Editor)
        .await
        .unwrap();
    store
        .set_member(acme, vic.user, AccountRole::Viewer)
        .await
        .unwrap();
    let team = TeamId::new();
    store.put_team(acme, team, "Support").await.unwrap();
    (acme, ada, vic, team)
}

/// An editor of another account.
async fn editor_elsewhere(store: &Arc<dyn Store>) -> Principal {
    let globex = AccountId::new();
    let eve = Principal::new(globex, UserId::new());
    store
        .put_account(globex, "Globex", AccountPolicy::default())
        .await
        .unwrap();
    store
        .set_member(globex, eve.user, AccountRole::Editor)
        .await
        .unwrap();
    eve
}

fn desk(prompt: &str) -> TemplateSpec {
    TemplateSpec::new(
        AgentDefinition::new("desk", "m")
            .system_prompt(prompt)
            .capabilities(["note"])
            .approval_mode(ApprovalMode::Autopilot),
    )
    .description("Answers the help desk.")
    .knows("The help desk opens at 9.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_made_from_a_template_follow_it_until_edited() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("t.db")).await.unwrap());
    let (acme, ada, vic, team) = account_on(&store).await;
    let rt = runtime_on(Arc::clone(&store), false);
    let templates = rt.templates();
    let id = TemplateId::new("desk");

    // Editors write templates; viewers read them; other accounts see none.
    let (v1, report) = templates.put(ada, "desk", desk("v1")).await.unwrap();
    assert_eq!((v1.version, report.updated.len()), (1, 0));
    assert_eq!(
        templates
            .put(vic, "desk", desk("mine"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryRoleTooLow
    );
    assert_eq!(templates.get(vic, &id).await.unwrap(), v1);
    let eve = editor_elsewhere(&store).await;
    assert_eq!(
        templates.get(eve, &id).await.unwrap_err().code(),
        ErrorCode::DirectoryForeignTemplate
    );
    assert_eq!(
        templates
            .put(eve, "desk", desk("taken"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryForeignTemplate
    );
    // Beyond the account's trust ceiling: refused.
    let mut high = desk("v1");
    high.definition.trust_level = TrustLevel::Privileged;
    assert_eq!(
        templates.put(ada, "high", high).await.unwrap_err().code(),
        ErrorCode::DirectoryBeyondPolicy
    );

    // Two agents from it: one as it is, at the team; one with overrides.
    let plain = templates
        .instantiate(
            ada,
            &id,
            Instantiation::new("desk-team").at(Scope::Team(team)),
        )
        .await
        .unwrap();
    assert_eq!(plain.template(), Some(&id));
    assert_eq!(plain.definition.system_prompt, "v1");
    let custom = templates
        .instantiate(
            ada,
            &id,
            Instantiation::new("desk-fr")
                .with(AgentOverrides::none().system_prompt("Réponds en français.")),
        )
        .await
        .unwrap();
    assert_eq!(custom.definition.system_prompt, "Réponds en français.");
    // The same id twice, a team of another account, a viewer: refused.
    let theirs = TeamId::new();
    store.put_team(eve.account, theirs, "Theirs").await.unwrap();
    assert_eq!(
        templates
            .instantiate(ada, &id, Instantiation::new("desk-team"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::StoreConflict
    );
    assert_eq!(
        templates
            .instantiate(ada, &id, Instantiation::new("x").at(Scope::Team(theirs)))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryOtherAccount
    );
    assert_eq!(
        templates
            .instantiate(vic, &id, Instantiation::new("y"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryRoleTooLow
    );
    // Assigned at the team; seeded with the template's knowledge.
    let member = Principal::new(acme, UserId::new()).with_team(team);
    store
        .set_member(acme, member.user, AccountRole::Viewer)
        .await
        .unwrap();
    store.add_to_team(team, member.user).await.unwrap();
    let access = store
        .access(&member, &AgentId::new("desk-team"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(access.assignments.len(), 1);
    let facts = rt
        .knowledge()
        .facts(&member, &AgentId::new("desk-team"))
        .await
        .unwrap();
    assert_eq!(
        facts.iter().map(|f| f.value.as_str()).collect::<Vec<_>>(),
        ["The help desk opens at 9."]
    );
    let s = rt
        .open_session(ada, "desk-team", "chat", None)
        .await
        .unwrap();
    assert_eq!(rt.send(s.id, "hi").await.unwrap().text, "[v1]");

    // Someone edits the French one: it diverges.
    let mut edited = custom.definition.clone();
    edited.temperature = Some(0.2);
    rt.directory().update_agent(ada, edited, 1).await.unwrap();
    // The template changes: the plain one follows, keeping nothing of
    // its own; the French one is left alone and reported.
    let (v2, report) = templates
        .update(ada, "desk", desk("v2").knows("Closed on Sundays."), 1)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(report.updated, [AgentId::new("desk-team")]);
    assert_eq!(report.diverged, [AgentId::new("desk-fr")]);
    assert!(report.refused.is_empty());
    assert_eq!(rt.send(s.id, "hi").await.unwrap().text, "[v2]");
    let now = rt
        .directory()
        .agent(ada, &AgentId::new("desk-team"))
        .await
        .unwrap();
    assert_eq!((now.version, now.template_version), (2, Some(2)));
    let facts = rt
        .knowledge()
        .facts(&member, &AgentId::new("desk-team"))
        .await
        .unwrap();
    assert_eq!(facts.len(), 2, "the new seed fact is added once: {facts:?}");
    // Syncing again changes nothing and says the same.
    let again = templates.sync(ada, &id).await.unwrap();
    assert_eq!(
        (again.updated, again.diverged),
        (report.updated, report.diverged)
    );
    assert_eq!(
        rt.directory()
            .agent_versions(ada, &AgentId::new("desk-team"))
            .await
            .unwrap()
            .len(),
        2
    );
    // A stale template write is refused; deleting keeps the agents.
    assert_eq!(
        templates
            .update(ada, "desk", desk("v3"), 1)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::StoreConflict
    );
    templates.delete(ada, &id).await.unwrap();
    assert_eq!(
        templates.get(ada, &id).await.unwrap_err().code(),
        ErrorCode::TemplateUnknown
    );
    assert_eq!(rt.send(s.id, "still?").await.unwrap().text, "[v2]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_records_its_parent_and_carries_its_knowledge_and_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("c.db")).await.unwrap());
    let (acme, ada, vic, _) = account_on(&store).await;
    let model = Arc::new(prompt_echo());
    let rt = Runtime::builder()
        .store_arc(Arc::clone(&store))
        .model_arc(Arc::clone(&model) as Arc<dyn ChatModel>)
        .capability(note())
        .agent(AgentDefinition::new("coded", "m").system_prompt("in code"))
        .build()
        .unwrap();
    let directory = rt.directory();
    let parent = directory
        .put_agent(ada, helper("parent").approval_mode(ApprovalMode::Autopilot))
        .await
        .unwrap();
    rt.knowledge()
        .add(
            Actor::Account(acme),
            NewFact::new(
                acme,
                FactOwner::Agent(parent.id().clone()),
                "",
                "",
                "Invoices go out on the 1st.",
            ),
        )
        .await
        .unwrap();
    // Ada talked to the parent; the conversation was summarised.
    let s = rt
        .open_session(ada, "helper", "telegram", Some("chat-1"))
        .await
        .unwrap();
    rt.send(s.id, "hello").await.unwrap();
    let turn = rt.sessions().history(ada, s.id, 1).await.unwrap().remove(0);
    store
        .put_summary(NewSummary::new(
            &s,
            turn.seq,
            "Ada runs the Lyon office.",
            "m",
            turn.interaction_id,
        ))
        .await
        .unwrap();
    // Another account talked to an agent in code; its clone takes nothing of it.
    let eve = editor_elsewhere(&store).await;
    let theirs = rt.open_session(eve, "coded", "chat", None).await.unwrap();
    rt.send(theirs.id, "secret").await.unwrap();
    let turn = rt
        .sessions()
        .history(eve, theirs.id, 1)
        .await
        .unwrap()
        .remove(0);
    store
        .put_summary(NewSummary::new(
            &theirs,
            turn.seq,
            "Eve's secret plans.",
            "m",
            turn.interaction_id,
        ))
        .await
        .unwrap();

    // Viewers may not clone.
    assert_eq!(
        directory
            .clone_agent(vic, parent.id(), "twin", CloneOptions::everything())
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryRoleTooLow
    );
    // The definition only.
    let bare = directory
        .clone_agent(ada, parent.id(), "bare", CloneOptions::definition_only())
        .await
        .unwrap();
    assert_eq!((bare.facts, bare.summaries), (0, 0));
    assert_eq!(bare.agent.definition.system_prompt, "parent");
    assert!(matches!(
        &bare.agent.origin,
        Some(AgentOrigin::Clone { parent: p, parent_version: 1 }) if p.as_str() == "helper"
    ));
    // Everything: the facts, and Ada's conversation, in her chat.
    let twin = directory
        .clone_agent(ada, parent.id(), "twin", CloneOptions::everything())
        .await
        .unwrap();
    assert_eq!((twin.facts, twin.summaries), (1, 1));
    let facts = rt
        .knowledge()
        .facts(&ada, &AgentId::new("twin"))
        .await
        .unwrap();
    assert!(
        facts
            .iter()
            .any(|f| f.value == "Invoices go out on the 1st.")
    );
    let carried = rt
        .open_session(ada, "twin", "telegram", Some("chat-1"))
        .await
        .unwrap();
    assert_ne!(carried.id, s.id);
    rt.send(carried.id, "where do I work?").await.unwrap();
    let last = model.requests().pop().unwrap();
    let shown: String = last.messages.iter().map(|m| m.content.as_str()).collect();
    assert!(shown.contains("Ada runs the Lyon office."), "{shown}");
    // A clone of the agent in code, for Acme: nothing of Eve's.
    let from_code = directory
        .clone_agent(
            ada,
            &AgentId::new("coded"),
            "coded-2",
            CloneOptions::everything(),
        )
        .await
        .unwrap();
    assert_eq!(from_code.summaries, 0);
    // Another account cannot clone Acme's agent.
    assert_eq!(
        directory
            .clone_agent(eve, parent.id(), "mine", CloneOptions::everything())
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryForeignAgent
    );
}
