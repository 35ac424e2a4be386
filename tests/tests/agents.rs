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
