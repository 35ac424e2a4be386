//! The directory enforced: membership, ownership, assignments that only
//! narrow, account policy, roles — and no way across accounts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

/// Answers with the names of the tools it was offered.
fn tool_lister() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let mut names: Vec<String> = r.tools.iter().map(|t| t.name.clone()).collect();
        names.sort();
        ScriptedReply::text(names.join(","))
    })
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn noop(name: &str) -> FunctionCapability {
    FunctionCapability::builder(name, "Does nothing.")
        .handler(|_: serde_json::Map<String, serde_json::Value>| async { Ok::<_, String>(0) })
}

async fn enforced(dir: &tempfile::TempDir, model: ScriptedModel) -> Runtime {
    let mut config = RuntimeConfig::default();
    config.enforce_directory = true;
    let mut builder = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("d.db")).await.unwrap())
        .model(model)
        .config(config);
    for name in ["add", "clock", "search", "shell"] {
        builder = builder.capability(noop(name));
    }
    builder.build().unwrap()
}

/// The store of a test's runtime, opened again beside it (another
/// connection to the same file): hosts set their directory up through the
/// store they built the runtime with.
async fn raw(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("d.db")).await.unwrap()
}

struct World {
    x: AccountId,
    team: TeamId,
    editor: Principal,
    viewer: Principal,
}

async fn world(dir: &tempfile::TempDir, deny: &[&str]) -> World {
    let store = raw(dir).await;
    let x = AccountId::new();
    let team = TeamId::new();
    let policy = AccountPolicy {
        deny: set(deny),
        ..Default::default()
    };
    store.put_account(x, "X", policy).await.unwrap();
    store.put_team(x, team, "ops").await.unwrap();
    let editor = Principal::new(x, UserId::new());
    let viewer = Principal::new(x, UserId::new());
    store
        .set_member(x, editor.user, AccountRole::Editor)
        .await
        .unwrap();
    store
        .set_member(x, viewer.user, AccountRole::Viewer)
        .await
        .unwrap();
    store.add_to_team(team, editor.user).await.unwrap();
    World {
        x,
        team,
        editor,
        viewer,
    }
}

async fn tools_seen(rt: &Runtime, principal: Principal, agent: &str) -> String {
    let session = rt.open_session(principal, agent, "t", None).await.unwrap();
    rt.send(session.id, "which tools?").await.unwrap().text
}

#[tokio::test]
async fn assignments_narrow_and_never_add() {
    let dir = tempfile::tempdir().unwrap();
    let rt = enforced(&dir, tool_lister()).await;
    let w = world(&dir, &[]).await;
    let agent = AgentDefinition::new("helper", "m").capabilities(["add", "clock", "search"]);
    rt.directory().put_agent(&w.editor, agent).await.unwrap();
    let store = raw(&dir).await;
    store
        .assign(Assignment {
            agent_id: "helper".into(),
            scope: Scope::Account(w.x),
            capabilities: None,
            approval_mode: None,
        })
        .await
        .unwrap();
    assert_eq!(
        tools_seen(&rt, w.editor, "helper").await,
        "add,clock,search"
    );
    // The team's assignment names `shell`, which the agent does not have: it is not added.
    store
        .assign(Assignment {
            agent_id: "helper".into(),
            scope: Scope::Team(w.team),
            capabilities: Some(set(&["add", "shell"])),
            approval_mode: None,
        })
        .await
        .unwrap();
    assert_eq!(
        tools_seen(&rt, w.editor.with_team(w.team), "helper").await,
        "add"
    );
    assert_eq!(
        tools_seen(&rt, w.editor, "helper").await,
        "add,clock,search",
        "outside the team"
    );
}

#[tokio::test]
async fn an_account_deny_list_hides_a_capability_from_every_agent() {
    let dir = tempfile::tempdir().unwrap();
    let rt = enforced(&dir, tool_lister()).await;
    let w = world(&dir, &[]).await;
    for name in ["one", "two"] {
        let agent = AgentDefinition::new(name, "m").capabilities(["add", "search"]);
        rt.directory().put_agent(&w.editor, agent).await.unwrap();
    }
    // Denied after the agents were made: hidden from both at run time.
    let policy = AccountPolicy {
        deny: set(&["search"]),
        ..Default::default()
    };
    raw(&dir).await.put_account(w.x, "X", policy).await.unwrap();
    for name in ["one", "two"] {
        raw(&dir)
            .await
            .assign(Assignment {
                agent_id: name.into(),
                scope: Scope::Account(w.x),
                capabilities: None,
                approval_mode: None,
            })
            .await
            .unwrap();
        assert_eq!(tools_seen(&rt, w.viewer, name).await, "add");
    }
}

#[tokio::test]
async fn a_viewer_cannot_change_agents() {
    let dir = tempfile::tempdir().unwrap();
    let rt = enforced(&dir, tool_lister()).await;
    let w = world(&dir, &[]).await;
    let err = rt
        .directory()
        .put_agent(&w.viewer, AgentDefinition::new("mine", "m"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "directory.role_too_low", "{err}");
    let outsider = Principal::new(w.x, UserId::new());
    let err = rt
        .directory()
        .put_agent(&outsider, AgentDefinition::new("mine", "m"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "directory.not_a_member");
    rt.directory()
        .put_agent(&w.editor, AgentDefinition::new("mine", "m"))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_editor_of_another_account_cannot_replace_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let rt = enforced(&dir, tool_lister()).await;
    let ours = world(&dir, &[]).await;
    let theirs = world(&dir, &[]).await;
    let agent = AgentDefinition::new("helper", "m").capabilities(["add"]);
    rt.directory().put_agent(&ours.editor, agent).await.unwrap();
    raw(&dir)
        .await
        .assign(Assignment {
            agent_id: "helper".into(),
            scope: Scope::Account(ours.x),
            capabilities: None,
            approval_mode: None,
        })
        .await
        .unwrap();
    // An editor of another account tries to take it over with more power.
    let takeover = AgentDefinition::new("helper", "m")
        .capabilities(["add", "shell"])
        .trust_level(TrustLevel::Privileged);
    let err = rt
        .directory()
        .put_agent(&theirs.editor, takeover)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "directory.foreign_agent", "{err}");
    assert_eq!(
        raw(&dir).await.agent_owner(&"helper".into()).await.unwrap(),
        Some(ours.x),
        "the agent stays with its owner"
    );
    assert_eq!(
        tools_seen(&rt, ours.viewer, "helper").await,
        "add",
        "and its definition is unchanged"
    );
    // The owner's editor may change it, within the account's policy.
    let beyond = AgentDefinition::new("helper", "m").trust_level(TrustLevel::Privileged);
    let err = rt
        .directory()
        .put_agent(&ours.editor, beyond)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "directory.beyond_policy", "{err}");
    rt.directory()
        .put_agent(
            &ours.editor,
            AgentDefinition::new("helper", "m").capabilities(["add", "clock"]),
        )
        .await
        .unwrap();
    assert_eq!(tools_seen(&rt, ours.viewer, "helper").await, "add,clock");
}

#[tokio::test]
async fn agents_stay_within_the_account_policy_and_host_agents_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let rt = enforced(&dir, tool_lister()).await;
    rt.directory()
        .register_agent(AgentDefinition::new("host", "m"))
        .unwrap();
    let w = world(&dir, &["shell"]).await;
    let err = rt
        .directory()
        .put_agent(&w.editor, AgentDefinition::new("host", "m"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "directory.host_agent", "{err}");
    let err = rt
        .directory()
        .put_agent(
            &w.editor,
            AgentDefinition::new("x", "m").capabilities(["shell"]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "directory.beyond_policy", "{err}");
    // The ceiling defaults to standard; an account policy may raise it,
    // and it caps every agent serving the account at run time.
    let elevated = AgentDefinition::new("x", "m").trust_level(TrustLevel::Elevated);
    let err = rt
        .directory()
        .put_agent(&w.editor, elevated.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "directory.beyond_policy", "{err}");
    let policy = AccountPolicy {
        deny: set(&["shell"]),
        max_trust_level: Some(TrustLevel::Elevated),
        ..Default::default()
    };
    raw(&dir).await.put_account(w.x, "X", policy).await.unwrap();
    rt.directory().put_agent(&w.editor, elevated).await.unwrap();
}

/// A random directory: accounts with users, agents and assignments at any
/// scope, some of them pointing across accounts, and agent writes by any
/// user to any agent.
#[derive(Debug, Clone)]
struct Directory {
    users: Vec<usize>,                     // user i belongs to account users[i]
    agents: Vec<usize>,                    // agent j is owned by account agents[j]
    assignments: Vec<(usize, u8, usize)>,  // (agent, scope kind, scope target index)
    writes: Vec<(usize, usize, u8, bool)>, // (user, agent, trust level, adds `shell`)
}

fn directories() -> impl Strategy<Value = Directory> {
    (
        prop::collection::vec(0..3usize, 1..6),
        prop::collection::vec(0..3usize, 1..5),
        prop::collection::vec((0..5usize, 0..3u8, 0..6usize), 0..12),
        prop::collection::vec((0..6usize, 0..6usize, 0..4u8, any::<bool>()), 0..10),
    )
        .prop_map(|(users, agents, assignments, writes)| Directory {
            users,
            agents,
            assignments,
            writes,
        })
}

fn trust(n: u8) -> TrustLevel {
    [
        TrustLevel::Basic,
        TrustLevel::Standard,
        TrustLevel::Elevated,
        TrustLevel::Privileged,
    ][usize::from(n % 4)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_user_acts_through_another_accounts_agent_or_assignment(d in directories()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let runtime = enforced(&dir, tool_lister()).await;
            let store = raw(&dir).await;
            let accounts: Vec<AccountId> = (0..3).map(|_| AccountId::new()).collect();
            let teams: Vec<TeamId> = (0..3).map(|_| TeamId::new()).collect();
            for (i, a) in accounts.iter().enumerate() {
                store.put_account(*a, "a", AccountPolicy::default()).await.unwrap();
                store.put_team(*a, teams[i], "t").await.unwrap();
            }
            let users: Vec<Principal> = d.users.iter().map(|&a| Principal::new(accounts[a], UserId::new())).collect();
            for (i, u) in users.iter().enumerate() {
                store.set_member(u.account, u.user, AccountRole::Editor).await.unwrap();
                store.add_to_team(teams[d.users[i]], u.user).await.unwrap();
            }
            let agents: Vec<AgentId> = (0..d.agents.len()).map(|j| AgentId::new(format!("agent{j}"))).collect();
            for (j, &owner) in d.agents.iter().enumerate() {
                // Stored agents of their accounts (agents registered in
                // code are read-only to every user).
                runtime
                    .directory()
                    .put_agent(Actor::Account(accounts[owner]), AgentDefinition::new(agents[j].clone(), "m"))
                    .await
                    .unwrap();
            }
            for &(agent, kind, target) in &d.assignments {
                let Some(agent_id) = agents.get(agent % agents.len()) else { continue };
                let scope = match kind {
                    0 => Scope::Account(accounts[target % 3]),
                    1 => Scope::Team(teams[target % 3]),
                    _ => Scope::User(users[target % users.len()].user),
                };
                store.assign(Assignment { agent_id: agent_id.clone(), scope, capabilities: None, approval_mode: None }).await.unwrap();
            }
            // Agent writes: only the owner's members change an agent, and
            // only within the policy (default ceiling `standard`).
            for &(user, agent, level, shell) in &d.writes {
                let writer = users[user % users.len()];
                let j = agent % agents.len();
                let mut caps = vec!["add"];
                if shell {
                    caps.push("shell");
                }
                let definition = AgentDefinition::new(agents[j].clone(), "m")
                    .capabilities(caps)
                    .trust_level(trust(level));
                let written = runtime.directory().put_agent(&writer, definition).await;
                if accounts[d.agents[j]] != writer.account {
                    let err = written.expect_err("another account's agent is never replaced");
                    prop_assert_eq!(err.code(), "directory.foreign_agent");
                } else if trust(level) > TrustLevel::Standard {
                    let err = written.expect_err("above the default ceiling");
                    prop_assert_eq!(err.code(), "directory.beyond_policy");
                } else {
                    prop_assert!(written.is_ok(), "{:?}", written);
                }
                prop_assert_eq!(
                    store.agent_owner(&agents[j]).await.unwrap(),
                    Some(accounts[d.agents[j]]),
                    "ownership never moves"
                );
            }
            for (i, user) in users.iter().enumerate() {
                for (j, agent) in agents.iter().enumerate() {
                    let as_team = user.with_team(teams[d.users[i]]);
                    for principal in [*user, as_team] {
                        let opened = runtime.open_session(principal, agent.clone(), "t", None).await;
                        if accounts[d.agents[j]] != user.account {
                            let err = opened.expect_err("an agent of another account is never reachable");
                            prop_assert_eq!(err.code(), "directory.foreign_agent");
                        } else if let Ok(session) = opened {
                            // Whatever opened is the user's own account's agent.
                            prop_assert_eq!(session.principal.account, user.account);
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn content_rules_block_messages_and_replies_with_the_reason_on_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::responder(|r| {
        ScriptedReply::text(format!("echo {}", r.messages.last().unwrap().content))
    });
    let model = Arc::new(model);
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("c.db")).await.unwrap())
        .model_arc(model.clone())
        .content_rules(thinklio_tests::NoSecrets)
        .agent(AgentDefinition::new("a", "m"))
        .build()
        .unwrap();
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();

    let refused = rt
        .send(session.id, "what is the admin password?")
        .await
        .unwrap();
    assert_eq!(
        refused.text,
        "I can't help with that: messages may not ask for passwords."
    );
    assert_eq!(
        model.calls(),
        0,
        "a blocked message never reaches the model"
    );
    let steps = rt
        .sessions()
        .steps(Principal::local(), refused.interaction_id)
        .await
        .unwrap();
    assert_eq!(
        steps[0].error.as_ref().unwrap().code,
        ErrorCode::PolicyContentBlocked
    );
    assert_eq!(
        rt.sessions()
            .state(Principal::local(), refused.interaction_id)
            .await
            .unwrap(),
        InteractionState::Completed
    );

    let replaced = rt.send(session.id, "tell me the secret").await.unwrap();
    assert_eq!(
        replaced.text,
        "I can't send that reply: replies may not reveal secrets."
    );
    let steps = rt
        .sessions()
        .steps(Principal::local(), replaced.interaction_id)
        .await
        .unwrap();
    let respond = steps.last().unwrap();
    assert_eq!(
        respond.output.as_ref().unwrap()["blocked"]["code"],
        ErrorCode::PolicyContentBlocked.as_str()
    );
    assert_eq!(
        rt.sessions()
            .reply(Principal::local(), replaced.interaction_id)
            .await
            .unwrap()
            .unwrap()
            .text,
        replaced.text
    );

    assert_eq!(
        rt.send(session.id, "hello").await.unwrap().text,
        "echo hello"
    );
}

#[tokio::test]
async fn a_blocked_reply_never_reaches_a_token_listener() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::responder(|r| {
        let text = &r.messages.last().unwrap().content;
        ScriptedReply::text(format!("here you go: the {text} is hunter2, keep it safe"))
    });
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("c.db")).await.unwrap())
        .model(model)
        .content_rules(thinklio_tests::NoSecrets)
        .agent(AgentDefinition::new("a", "m"))
        .build()
        .unwrap();
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let mut tokens = rt.subscribe_tokens();
    let blocked = rt.send(session.id, "secret").await.unwrap();
    assert_eq!(
        blocked.text,
        "I can't send that reply: replies may not reveal secrets."
    );
    let mut heard = String::new();
    while let Ok(t) = tokens.try_recv() {
        heard.push_str(&t.text);
    }
    assert_eq!(heard, "", "no piece of the blocked answer was published");

    // An answer the rules pass still reaches listeners, whole.
    let allowed = rt.send(session.id, "weather").await.unwrap();
    let mut heard = String::new();
    while let Ok(t) = tokens.try_recv() {
        assert_eq!(t.interaction_id, allowed.interaction_id);
        heard.push_str(&t.text);
    }
    assert_eq!(heard, allowed.text);
}
