//! Delegation: agents as capabilities, run as durable child interactions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

/// Each agent has its own model id; the scripted model answers by it.
/// `model-x` with a delegate `ask_y` delegates first, then reports what it got.
fn model() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        let me = r.model.trim_start_matches("model-").to_owned();
        let delegate = r
            .tools
            .iter()
            .find(|t| t.name.starts_with("ask_"))
            .map(|t| t.name.clone());
        match (last.role, delegate) {
            (Role::User, Some(tool)) => {
                ScriptedReply::tool_call(format!("call_{me}"), tool, r#"{"task": "dig deeper"}"#)
            }
            (Role::Tool, _) => ScriptedReply::text(format!("{me} got [{}]", last.content)),
            _ => ScriptedReply::text(format!("{me} answers")),
        }
    })
}

fn agent(name: &str, delegates_to: Option<&str>) -> AgentDefinition {
    AgentDefinition::new(name, format!("model-{name}"))
        .capabilities(delegates_to.map(|d| format!("ask_{d}")))
}

fn prices() -> PriceTable {
    PriceTable::new()
        .with("model-a", ModelPrice::usd_per_million(1.0, 2.0))
        .with("model-b", ModelPrice::usd_per_million(3.0, 4.0))
        .with("model-c", ModelPrice::usd_per_million(5.0, 6.0))
}

async fn runtime(dir: &tempfile::TempDir, builder: RuntimeBuilder) -> Runtime {
    builder
        .store(SqliteStore::open(dir.path().join("d.db")).await.unwrap())
        .model(model())
        .prices(prices())
        .build()
        .unwrap()
}

fn chain_builder() -> RuntimeBuilder {
    Runtime::builder()
        .agent(agent("a", Some("b")))
        .agent(agent("b", Some("c")))
        .agent(agent("c", None))
        .delegate(Delegate::new("b", "ask_b", "Asks agent b."))
        .delegate(Delegate::new("c", "ask_c", "Asks agent c."))
}

#[tokio::test]
async fn a_three_level_chain_runs_as_child_interactions_and_rolls_up_cost() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&dir, chain_builder()).await;
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let reply = rt.send(session.id, "go").await.unwrap();
    assert_eq!(reply.text, "a got [b got [c answers]]");

    let store = SqliteStore::open(dir.path().join("d.db")).await.unwrap();
    let all = store.interactions_of_session(session.id).await.unwrap();
    assert_eq!(all.len(), 3);
    let (a, b, c) = (&all[0], &all[1], &all[2]);
    assert_eq!(
        (
            a.agent_id.as_str(),
            a.parent_interaction_id,
            a.delegation_depth
        ),
        ("a", None, 0)
    );
    assert_eq!(
        (
            b.agent_id.as_str(),
            b.parent_interaction_id,
            b.delegation_depth
        ),
        ("b", Some(a.id), 1)
    );
    assert_eq!(
        (
            c.agent_id.as_str(),
            c.parent_interaction_id,
            c.delegation_depth
        ),
        ("c", Some(b.id), 2)
    );
    assert_eq!(b.input, "dig deeper");

    let mut own_cost = Cost::ZERO;
    for i in [a, b, c] {
        let steps = store.steps(i.id).await.unwrap();
        assert_eq!(
            InteractionState::derive(&steps),
            InteractionState::Completed
        );
        assert!(steps.iter().all(|s| s.state == StepState::Succeeded));
        own_cost += steps
            .iter()
            .filter(|s| s.kind == StepKind::Think)
            .map(|s| s.cost)
            .fold(Cost::ZERO, |x, y| x + y);
    }
    assert!(own_cost > Cost::ZERO);
    assert_eq!(
        reply.cost, own_cost,
        "the cost at A is the sum of all three"
    );
    let a_steps = store.steps(a.id).await.unwrap();
    let act = a_steps.iter().find(|s| s.kind == StepKind::Act).unwrap();
    let b_total: Cost = store
        .steps(b.id)
        .await
        .unwrap()
        .iter()
        .map(|s| s.cost)
        .fold(Cost::ZERO, |x, y| x + y);
    assert_eq!(
        act.cost, b_total,
        "B's whole cost, C's included, rolls up into A's act step"
    );
    // Usage reports count every model call once.
    let totals = store.usage_totals(&UsageFilter::all()).await.unwrap();
    assert_eq!(
        (totals.calls, totals.cost),
        (5, reply.cost),
        "2 + 2 + 1 model calls"
    );
    // Only A's reply went to the channel.
    assert!(store.reply_of(b.id).await.unwrap().is_none());
    assert!(store.reply_of(c.id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_cycle_is_refused_at_configuration_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("c.db")).await.unwrap())
        .model(model())
        .agent(agent("a", Some("b")))
        .agent(agent("b", Some("a")))
        .delegate(Delegate::new("a", "ask_a", "Asks a."))
        .delegate(Delegate::new("b", "ask_b", "Asks b."))
        .build()
        .unwrap_err();
    assert_eq!(err.code(), "delegation.cycle");
    assert!(err.to_string().contains("a → b → a"), "{err}");

    // The same cycle made at run time by re-registering an agent is refused too.
    let rt = runtime(&dir, chain_builder()).await;
    let err = rt
        .directory()
        .register_agent(agent("c", Some("a")).capabilities(["ask_b"]))
        .unwrap_err();
    assert!(err.to_string().contains("b → c → b"), "{err}");
}

#[tokio::test]
async fn a_cycle_forced_past_the_configuration_check_is_refused_when_called() {
    let dir = tempfile::tempdir().unwrap();
    // b may call `ask_a`, which is not a delegate yet: no cycle is configured.
    let builder = Runtime::builder()
        .agent(agent("a", Some("b")))
        .agent(agent("b", Some("a")))
        .delegate(Delegate::new("b", "ask_b", "Asks b."));
    let rt = runtime(&dir, builder).await;
    // Forced: the registry takes the capability without the graph check.
    let ask_a = rt
        .directory()
        .delegate_capability(&Delegate::new("a", "ask_a", "Asks a."));
    rt.capabilities().register_arc(ask_a).unwrap();
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let reply = rt.send(session.id, "go").await.unwrap();
    assert!(reply.text.contains("delegation refused"), "{}", reply.text);
    assert!(reply.text.contains("a → b → a"), "{}", reply.text);
    let all = rt
        .sessions()
        .interactions(Principal::local(), session.id)
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "no third interaction was started");
    let b_steps = rt
        .sessions()
        .steps(Principal::local(), all[1].id)
        .await
        .unwrap();
    let refused = b_steps.iter().find(|s| s.kind == StepKind::Act).unwrap();
    assert_eq!(refused.error.as_ref().unwrap().code, "delegation.cycle");
}

#[tokio::test]
async fn the_depth_limit_stops_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let builder = Runtime::builder()
        .agent(agent("a", Some("b")).max_delegation_depth(1))
        .agent(agent("b", Some("c")))
        .agent(agent("c", None))
        .delegate(Delegate::new("b", "ask_b", "Asks agent b."))
        .delegate(Delegate::new("c", "ask_c", "Asks agent c."));
    let rt = runtime(&dir, builder).await;
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let reply = rt.send(session.id, "go").await.unwrap();
    assert!(
        reply
            .text
            .starts_with("a got [b got [Error (delegation.depth_exceeded)"),
        "{}",
        reply.text
    );
    assert_eq!(
        rt.sessions()
            .interactions(Principal::local(), session.id)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn the_graph_exports_as_mermaid_and_dot_with_cycles_marked() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&dir, chain_builder()).await;
    let graph = rt.directory().graph();
    assert!(graph.cycles().is_empty());
    let mermaid = graph.to_mermaid();
    assert!(mermaid.starts_with("flowchart LR"));
    assert!(mermaid.contains("a -->|ask_b| b"), "{mermaid}");
    assert!(mermaid.contains("b -->|ask_c| c"), "{mermaid}");
    assert!(!mermaid.contains("stroke:red"));
    let mut cyclic = graph.clone();
    cyclic
        .edges
        .push((AgentId::new("c"), "ask_a".into(), AgentId::new("a")));
    assert_eq!(cyclic.cycles().len(), 1);
    assert!(
        cyclic.to_mermaid().contains("linkStyle 0,1,2 stroke:red"),
        "{}",
        cyclic.to_mermaid()
    );
    let dot = cyclic.to_dot();
    assert!(
        dot.contains("\"c\" -> \"a\" [label=\"ask_a\", color=red];"),
        "{dot}"
    );
}
