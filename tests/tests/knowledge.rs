//! Knowledge end to end: extraction after each chat, recall in the context
//! step, reconciliation, and isolation through every path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

fn extraction(facts: &[(&str, &str, &str)]) -> ScriptedReply {
    let facts: Vec<Value> = facts
        .iter()
        .map(|(s, p, v)| json!({ "subject": s, "predicate": p, "value": v, "confidence": 0.9, "scope": "user" }))
        .collect();
    ScriptedReply::text(json!({ "facts": facts }).to_string())
}

fn recalled(step: &Step) -> Vec<String> {
    step.output.as_ref().unwrap()["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The store a test's runtime writes to, opened again beside it (another
/// connection to the same file), for what hosts never read: usage rows,
/// dead letters, a fact's history.
async fn raw(dir: &tempfile::TempDir, file: &str) -> SqliteStore {
    SqliteStore::open(dir.path().join(file)).await.unwrap()
}

/// A runtime builder with an assistant that learns through `model`
/// (extraction on) on a fresh SQLite file in `dir`.
async fn learning(dir: &tempfile::TempDir, model: Arc<ScriptedModel>) -> RuntimeBuilder {
    let mut config = RuntimeConfig::default();
    config.knowledge = KnowledgeConfig::default().extract_with("extractor");
    Runtime::builder()
        .store(SqliteStore::open(dir.path().join("k.db")).await.unwrap())
        .model_arc(model)
        .agent(AgentDefinition::new("assistant", "chat"))
        .config(config)
}

#[tokio::test]
async fn the_agent_learns_from_three_chats_and_recalls_in_the_fourth() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(ScriptedModel::new([
        ScriptedReply::text("Nice to meet you, Ada."),
        extraction(&[("Ada", "lives in", "Paris"), ("Ada", "dog's name", "Rex")]),
        ScriptedReply::text("Green it is."),
        extraction(&[
            ("Ada", "favourite colour", "green"),
            ("Ada", "lives in", "Paris"),
        ]),
        ScriptedReply::text("Congratulations on the move!"),
        extraction(&[("Ada", "lives in", "Lyon")]),
        ScriptedReply::text("You live in Lyon and your dog is Rex."),
        extraction(&[]),
    ]));
    let rt = learning(&dir, model.clone()).await.build().unwrap();
    let me = Principal::local();
    let chats = [
        "Hi, I'm Ada. I live in Paris with my dog Rex.",
        "My favourite colour is green, and yes, still in Paris.",
        "Big news: I moved to Lyon last week.",
    ];
    for (i, text) in chats.iter().enumerate() {
        // Each chat in its own session: knowledge crosses sessions, history does not.
        let s = rt
            .open_session(me, "assistant", "test", Some(&format!("s{i}")))
            .await
            .unwrap();
        rt.send(s.id, *text).await.unwrap();
        // The reply's commit enqueued the extraction; the queue runs it.
        let run = rt.run_due_tasks().await.unwrap();
        assert_eq!(run.completed, 1, "chat {i}: extraction ran");
    }
    let s = rt
        .open_session(me, "assistant", "test", Some("s3"))
        .await
        .unwrap();
    let reply = rt
        .send(s.id, "Where do I live, and what is my dog called?")
        .await
        .unwrap();
    assert_eq!(reply.text, "You live in Lyon and your dog is Rex.");

    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    assert_eq!(steps[0].kind, StepKind::Context);
    let facts = recalled(&steps[0]);
    assert!(facts.contains(&"Ada lives in Lyon".to_owned()), "{facts:?}");
    assert!(
        facts.contains(&"Ada dog's name Rex".to_owned()),
        "{facts:?}"
    );
    assert!(
        !facts.iter().any(|f| f.contains("Paris")),
        "superseded facts are not recalled: {facts:?}"
    );
    // The model saw them.
    let requests = model.requests();
    let last_chat = requests
        .iter()
        .rev()
        .find(|r| r.output_schema.is_none())
        .unwrap();
    let memory = last_chat
        .messages
        .iter()
        .find(|m| m.role == Role::System && m.content.contains("earlier conversations"))
        .unwrap();
    assert!(memory.content.contains("Ada lives in Lyon"));
    // Extraction asked for schema-constrained output.
    let extract = requests.iter().find(|r| r.output_schema.is_some()).unwrap();
    assert_eq!(
        extract.output_schema.as_ref().unwrap().schema,
        extraction_schema()
    );
    assert!(extract.messages[1].content.contains("I live in Paris"));

    // Reconciliation: three current facts; Paris once, superseded by Lyon.
    let current = rt
        .knowledge()
        .facts(&me, &AgentId::new("assistant"))
        .await
        .unwrap();
    let mut values: Vec<&str> = current.iter().map(|f| f.value.as_str()).collect();
    values.sort();
    assert_eq!(values, vec!["Lyon", "Rex", "green"]);
    let all = rt
        .knowledge()
        .export_user(Principal::local(), me.account, me.user)
        .await
        .unwrap();
    let all = all["facts"].as_array().unwrap();
    let paris: Vec<&Value> = all.iter().filter(|f| f["value"] == "Paris").collect();
    assert_eq!(paris.len(), 1, "a repeated fact is not duplicated");
    let lyon = current.iter().find(|f| f.value == "Lyon").unwrap();
    assert_eq!(paris[0]["superseded_by"], json!(lyon.id));
    assert!(paris[0]["invalid_at"].is_number() && paris[0]["expired_at"].is_number());
    // Provenance traces Lyon to the third chat's interaction.
    let Provenance::Interaction {
        interaction_id,
        step_id,
    } = &lyon.provenance
    else {
        panic!()
    };
    let third = rt
        .sessions()
        .interaction(Principal::local(), *interaction_id)
        .await
        .unwrap();
    assert_eq!(third.input, chats[2]);
    assert!(step_id.is_some());
    let history = raw(&dir, "k.db")
        .await
        .fact_history(paris[0]["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].actor, FactActor::Extraction(*interaction_id));
}

#[tokio::test]
async fn a_failed_extraction_is_retried_and_never_blocks_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(ScriptedModel::new([
        ScriptedReply::text("Noted."),
        ScriptedReply::text("this is not JSON"),
        ScriptedReply::http_error(503),
        extraction(&[("Bo", "works at", "the harbour")]),
    ]));
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let rt = learning(&dir, model.clone())
        .await
        .clock(clock.clone())
        .build()
        .unwrap();
    let me = Principal::local();
    let s = rt
        .open_session(me, "assistant", "test", None)
        .await
        .unwrap();
    let reply = rt.send(s.id, "I work at the harbour.").await.unwrap();
    assert_eq!(reply.text, "Noted.", "the reply came before any extraction");
    assert!(
        rt.knowledge()
            .facts(&me, &AgentId::new("assistant"))
            .await
            .unwrap()
            .is_empty()
    );
    let mut retried = 0;
    for _ in 0..3 {
        let run = rt.run_due_tasks().await.unwrap();
        retried += run.retried;
        clock.advance(std::time::Duration::from_secs(3600));
    }
    assert_eq!(retried, 2);
    let facts = rt
        .knowledge()
        .facts(&me, &AgentId::new("assistant"))
        .await
        .unwrap();
    assert_eq!(facts.len(), 1);
    assert_eq!(facts[0].value, "the harbour");
}

/// Who owns a fact, as the test recorded it when adding it.
#[derive(Clone, Debug)]
struct Owned {
    account: usize,
    owner: FactOwner,
}

/// The rule, written out again independently of `Visibility::sees`.
fn may_see(account: usize, user: UserId, teams: &[TeamId], agent: &AgentId, f: &Owned) -> bool {
    if f.account != account {
        return false;
    }
    match &f.owner {
        FactOwner::Account => true,
        FactOwner::Agent(a) => a == agent,
        FactOwner::Team(t) => teams.contains(t),
        FactOwner::User(u) => *u == user,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_query_ever_returns_a_fact_its_principal_may_not_see() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("iso.db")).await.unwrap())
        .model(ScriptedModel::new([]))
        .agent(AgentDefinition::new("a0", "m"))
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(0x7411_1c10);
    let accounts: Vec<AccountId> = (0..3).map(|_| AccountId::new()).collect();
    let teams: Vec<Vec<TeamId>> = accounts
        .iter()
        .map(|_| (0..4).map(|_| TeamId::new()).collect())
        .collect();
    let users: Vec<Vec<UserId>> = accounts
        .iter()
        .map(|_| (0..8).map(|_| UserId::new()).collect())
        .collect();
    let agents: Vec<AgentId> = (0..3).map(|i| AgentId::new(format!("a{i}"))).collect();
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];

    let mut owned: HashMap<FactId, Owned> = HashMap::new();
    let mut batch = Vec::new();
    for i in 0..1200 {
        let a = rng.usize(..accounts.len());
        let owner = match rng.u8(..4) {
            0 => FactOwner::Account,
            1 => FactOwner::Agent(agents[rng.usize(..agents.len())].clone()),
            2 => FactOwner::Team(teams[a][rng.usize(..4)]),
            _ => FactOwner::User(users[a][rng.usize(..8)]),
        };
        let text = format!(
            "{} {} {} note {i}",
            words[rng.usize(..8)],
            words[rng.usize(..8)],
            words[rng.usize(..8)]
        );
        let mut fact = NewFact::new(accounts[a], owner.clone(), "", "", text);
        // Some slot facts too, so precedence and rivals are exercised.
        if i % 5 == 0 {
            fact.subject = "project".into();
            fact.predicate = words[rng.usize(..8)].into();
        }
        batch.push((a, owner, fact));
    }
    // Each account's facts are imported by the host acting for it.
    for (a, account) in accounts.iter().enumerate() {
        let mine: Vec<&(usize, FactOwner, NewFact)> =
            batch.iter().filter(|(x, _, _)| *x == a).collect();
        let writes = rt
            .knowledge()
            .import(
                Actor::Account(*account),
                mine.iter().map(|(_, _, f)| f.clone()).collect(),
                200,
                |_| {},
            )
            .await
            .unwrap();
        for ((a, owner, _), w) in mine.iter().zip(&writes) {
            owned.entry(w.fact().id).or_insert(Owned {
                account: *a,
                owner: owner.clone(),
            });
        }
    }

    let mut checked = 0usize;
    for q in 0..3000 {
        let a = rng.usize(..accounts.len());
        let user = users[a][rng.usize(..8)];
        let mut my_teams: Vec<TeamId> = teams[a].iter().copied().filter(|_| rng.bool()).collect();
        my_teams.truncate(rng.usize(..=3));
        let agent = agents[rng.usize(..agents.len())].clone();
        let mut principal = Principal::new(accounts[a], user);
        principal.team = my_teams.first().copied();
        let visibility = Visibility::of(&principal, &agent).with_teams(my_teams.clone());
        let question = format!("{} {}", words[rng.usize(..8)], words[rng.usize(..8)]);
        let k = 1 + rng.usize(..20);
        let hits = if q % 2 == 0 {
            rt.knowledge()
                .search_within(
                    Actor::Account(accounts[a]),
                    visibility.clone(),
                    &question,
                    k,
                )
                .await
                .unwrap()
        } else {
            let mut query = FactQuery::new(visibility.clone(), &question, None, k);
            query.include_history = true;
            raw(&dir, "iso.db")
                .await
                .search_facts(&query)
                .await
                .unwrap()
        };
        for h in &hits {
            let o = &owned[&h.fact.id];
            assert!(
                may_see(a, user, &my_teams, &agent, o),
                "query {q} leaked {o:?} to {principal:?}"
            );
            checked += 1;
        }
        if q % 50 == 0 {
            for f in raw(&dir, "iso.db")
                .await
                .facts(&visibility, true)
                .await
                .unwrap()
            {
                assert!(
                    may_see(a, user, &my_teams, &agent, &owned[&f.id]),
                    "listing leaked"
                );
                checked += 1;
            }
            let export = rt
                .knowledge()
                .export_user(Actor::Account(accounts[a]), accounts[a], user)
                .await
                .unwrap();
            for f in export["facts"].as_array().unwrap() {
                let id: FactId = f["id"].as_str().unwrap().parse().unwrap();
                assert_eq!(owned[&id].owner, FactOwner::User(user), "export leaked");
                assert_eq!(owned[&id].account, a);
            }
        }
    }
    assert!(
        checked > 10_000,
        "the queries returned facts to check ({checked})"
    );
}

#[tokio::test]
async fn a_delegate_recalls_the_users_facts_and_its_own_agent_layer_only() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        match (r.model.as_str(), last.role) {
            ("boss-model", Role::User) => ScriptedReply::tool_call(
                "c1",
                "ask_helper",
                r#"{"task": "what is the office wifi password and my badge number?"}"#,
            ),
            ("boss-model", _) => ScriptedReply::text(format!("helper said: {}", last.content)),
            _ => ScriptedReply::text("done"),
        }
    });
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("d.db")).await.unwrap())
        .model(model)
        .agent(AgentDefinition::new("boss", "boss-model").capabilities(["ask_helper"]))
        .agent(AgentDefinition::new("helper", "helper-model"))
        .delegate(Delegate::new("helper", "ask_helper", "Asks the helper."))
        .build()
        .unwrap();
    let me = Principal::local();
    let other = Principal::new(me.account, UserId::new());
    for (owner, text) in [
        (
            FactOwner::Agent(AgentId::new("boss")),
            "boss secret: the office wifi password is hunter2",
        ),
        (
            FactOwner::Agent(AgentId::new("helper")),
            "helper knows: the office wifi password is for guests only",
        ),
        (FactOwner::User(me.user), "my badge number is 4411"),
        (FactOwner::User(other.user), "their badge number is 9999"),
    ] {
        // The host writes them: a user writes only their own facts.
        rt.knowledge()
            .add(
                Actor::Account(me.account),
                NewFact::new(me.account, owner, "", "", text),
            )
            .await
            .unwrap();
    }
    let s = rt.open_session(me, "boss", "test", None).await.unwrap();
    let reply = rt
        .send(s.id, "ask the helper about wifi and my badge")
        .await
        .unwrap();
    assert!(reply.text.starts_with("helper said"));
    let all = rt
        .sessions()
        .interactions(Principal::local(), s.id)
        .await
        .unwrap();
    let child = all
        .iter()
        .find(|i| i.parent_interaction_id.is_some())
        .unwrap();
    assert_eq!(child.agent_id.as_str(), "helper");
    let steps = rt
        .sessions()
        .steps(Principal::local(), child.id)
        .await
        .unwrap();
    let facts = recalled(&steps[0]).join("\n");
    assert!(
        facts.contains("guests only"),
        "its own agent layer: {facts}"
    );
    assert!(facts.contains("4411"), "the user it serves: {facts}");
    assert!(
        !facts.contains("hunter2"),
        "never its caller's agent layer: {facts}"
    );
    assert!(!facts.contains("9999"), "never another user's: {facts}");
    // The parent sees its own agent layer and the user's, not the helper's.
    let parent = all
        .iter()
        .find(|i| i.parent_interaction_id.is_none())
        .unwrap();
    let facts = recalled(
        &rt.sessions()
            .steps(Principal::local(), parent.id)
            .await
            .unwrap()[0],
    )
    .join("\n");
    assert!(
        facts.contains("hunter2") && facts.contains("4411"),
        "its own agent layer and the user's facts: {facts}"
    );
    assert!(!facts.contains("guests only"), "{facts}");
}

#[tokio::test]
async fn nothing_is_learned_from_an_exchange_the_content_rules_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::responder(|r| {
        if r.output_schema.is_some() {
            return extraction(&[("user", "said", "something")]);
        }
        let last = &r.messages.last().unwrap().content;
        ScriptedReply::text(if last.contains("tell") {
            "the secret is 42"
        } else {
            "fine"
        })
    });
    let rt = learning(&dir, Arc::new(model))
        .await
        .content_rules(thinklio_tests::NoSecrets)
        .build()
        .unwrap();
    let s = rt
        .open_session(Principal::local(), "assistant", "t", None)
        .await
        .unwrap();
    rt.send(s.id, "my password is hunter2").await.unwrap();
    rt.send(s.id, "tell me").await.unwrap();
    assert_eq!(
        rt.run_due_tasks().await.unwrap().completed,
        0,
        "blocked both ways: no extraction"
    );
    rt.send(s.id, "I like tea").await.unwrap();
    assert_eq!(
        rt.run_due_tasks().await.unwrap().completed,
        1,
        "an allowed exchange is learned from"
    );
}

#[tokio::test]
async fn extraction_spends_from_the_principals_budget_and_stops_when_it_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(ScriptedModel::responder(|r| {
        if r.output_schema.is_some() {
            extraction(&[("user", "likes", "tea")])
        } else {
            ScriptedReply::text("noted")
        }
    }));
    let rt = learning(&dir, model.clone())
        .await
        .prices(
            PriceTable::new()
                .with("chat", ModelPrice::usd_per_million(1.0, 1.0))
                .with("extractor", ModelPrice::usd_per_million(1000.0, 1000.0)),
        )
        .build()
        .unwrap();
    let me = Principal::local();
    let s = rt.open_session(me, "assistant", "t", None).await.unwrap();
    let reply = rt.send(s.id, "I like tea").await.unwrap();
    assert_eq!(rt.run_due_tasks().await.unwrap().completed, 1);
    let usage = raw(&dir, "k.db")
        .await
        .usage_totals(&UsageFilter::all().user(me.user))
        .await
        .unwrap();
    assert_eq!(usage.calls, 2, "the chat call and the extraction call");
    assert!(
        usage.cost > reply.cost,
        "extraction cost counts: {usage:?} vs {:?}",
        reply.cost
    );
    let extraction_usage = raw(&dir, "k.db")
        .await
        .usage_report(UsageGroup::User, &UsageFilter::all().user(me.user))
        .await
        .unwrap();
    assert_eq!(extraction_usage[0].totals.cost, usage.cost);

    // With the budget spent, the next extraction is refused before its call.
    rt.usage()
        .set_budget(
            Principal::local(),
            BudgetLimit::monthly(Scope::User(me.user), usage.cost),
        )
        .await
        .unwrap();
    let calls = model.calls();
    rt.enqueue(NewTask::new(
        EXTRACT_TASK,
        json!({ "interaction_id": reply.interaction_id }),
        Timestamp::from_millis(0),
    ))
    .await
    .unwrap();
    let run = rt.run_due_tasks().await.unwrap();
    assert_eq!(run.dead_lettered, 1);
    assert_eq!(model.calls(), calls, "no model call past a spent budget");
    let dead = raw(&dir, "k.db").await.dead_letters().await.unwrap();
    assert!(
        dead[0].last_error.as_deref().unwrap().contains("budget"),
        "{dead:?}"
    );
}

/// An extraction answer in the current shape: `(subject, predicate, value,
/// replaces)`, an add when `replaces` is `None`.
fn answer(facts: &[(&str, &str, &str, Option<usize>)]) -> ScriptedReply {
    let facts: Vec<Value> = facts
        .iter()
        .map(|(s, p, v, replaces)| {
            json!({
                "subject": s, "predicate": p, "value": v, "confidence": 0.9, "scope": "user",
                "action": if replaces.is_some() { "update" } else { "add" },
                "replaces": replaces,
                // What a model may well say of `likes`: the built-in list
                // knows better.
                "cardinality": "single",
            })
        })
        .collect();
    ScriptedReply::text(json!({ "facts": facts }).to_string())
}

#[tokio::test]
async fn five_things_said_over_five_chats_are_all_recalled_in_the_sixth() {
    let dir = tempfile::tempdir().unwrap();
    let likes = [
        "green tea",
        "jazz",
        "hiking",
        "the Rust language",
        "sourdough bread",
    ];
    let chats = [
        "I'm Ada, and I drink green tea all day.",
        "Lately I've been listening to a lot of jazz.",
        "Weekends are for hiking.",
        "At work I write the Rust language and love it.",
        "I bake sourdough bread on Sundays.",
    ];
    let model = Arc::new(ScriptedModel::responder(move |r| {
        let last = r
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        if r.output_schema.is_some() {
            let i = chats.iter().position(|c| last.contains(c)).unwrap_or(0);
            return answer(&[("Ada", "likes", likes[i], None)]);
        }
        ScriptedReply::text("Noted!")
    }));
    let rt = learning(&dir, model.clone()).await.build().unwrap();
    let me = Principal::local();
    for (i, text) in chats.iter().enumerate() {
        let s = rt
            .open_session(me, "assistant", "test", Some(&format!("chat{i}")))
            .await
            .unwrap();
        rt.send(s.id, *text).await.unwrap();
        assert_eq!(rt.run_due_tasks().await.unwrap().completed, 1);
    }
    let s = rt
        .open_session(me, "assistant", "test", Some("chat5"))
        .await
        .unwrap();
    let reply = rt.send(s.id, "What do I like?").await.unwrap();
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    let mut facts = recalled(&steps[0]);
    facts.sort();
    let mut expected: Vec<String> = likes.iter().map(|l| format!("Ada likes {l}")).collect();
    expected.sort();
    assert_eq!(
        facts, expected,
        "all five are recalled, none replaced another"
    );
    // The model was shown all five, each with the day it was said.
    let chat = model
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.output_schema.is_none())
        .unwrap();
    let memory = chat
        .messages
        .iter()
        .find(|m| m.content.contains("earlier conversations"))
        .unwrap();
    let today = steps[0].created_at.date();
    for l in likes {
        assert!(
            memory
                .content
                .contains(&format!("Ada likes {l} (since {today})")),
            "{l}: {}",
            memory.content
        );
    }
    // Each fact is true from the message that said it.
    for f in rt
        .knowledge()
        .facts(&me, &AgentId::new("assistant"))
        .await
        .unwrap()
    {
        let Provenance::Interaction { interaction_id, .. } = f.provenance else {
            panic!("{f:?}")
        };
        let said = rt
            .sessions()
            .interaction(Principal::local(), interaction_id)
            .await
            .unwrap();
        assert_eq!(f.valid_at, said.created_at);
    }
}

#[tokio::test]
async fn a_contradiction_supersedes_only_the_fact_it_contradicts() {
    let dir = tempfile::tempdir().unwrap();
    // The extractor reads the numbered known facts it is shown and names
    // the one the user took back.
    let model = Arc::new(ScriptedModel::responder(|r| {
        let last = r
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        if r.output_schema.is_none() {
            return ScriptedReply::text("Noted!");
        }
        if last.contains("User: I live in Paris") {
            return answer(&[
                ("Ada", "lives in", "Paris", None),
                ("Ada", "likes", "tea", None),
                ("Ada", "likes", "jazz", None),
            ]);
        }
        let number = last
            .lines()
            .find(|l| l.contains("Ada likes tea"))
            .and_then(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok());
        assert!(number.is_some(), "the known facts are shown: {last}");
        answer(&[("Ada", "likes", "coffee", number)])
    }));
    let rt = learning(&dir, model.clone()).await.build().unwrap();
    let me = Principal::local();
    for (i, text) in [
        "I live in Paris; I like tea and jazz.",
        "I don't like tea any more, coffee is my drink now.",
    ]
    .iter()
    .enumerate()
    {
        let s = rt
            .open_session(me, "assistant", "test", Some(&format!("c{i}")))
            .await
            .unwrap();
        rt.send(s.id, *text).await.unwrap();
        assert_eq!(rt.run_due_tasks().await.unwrap().completed, 1);
    }
    let mut current: Vec<String> = rt
        .knowledge()
        .facts(&me, &AgentId::new("assistant"))
        .await
        .unwrap()
        .iter()
        .map(Fact::text)
        .collect();
    current.sort();
    assert_eq!(
        current,
        vec!["Ada likes coffee", "Ada likes jazz", "Ada lives in Paris"]
    );
    let all = rt
        .knowledge()
        .export_user(Principal::local(), me.account, me.user)
        .await
        .unwrap();
    let tea = all["facts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["value"] == "tea")
        .unwrap()
        .clone();
    let coffee = all["facts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["value"] == "coffee")
        .unwrap()
        .clone();
    assert_eq!(tea["superseded_by"], coffee["id"]);
}

/// Counts the texts it embeds (with the offline embedder's vectors).
#[derive(Default)]
struct Counting {
    texts: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Embedder for Counting {
    fn dimensions(&self) -> usize {
        OfflineEmbedder::default().dimensions()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.texts.lock().unwrap().extend(texts.iter().cloned());
        OfflineEmbedder::default().embed(texts).await
    }
}

#[tokio::test]
async fn a_message_is_embedded_once_for_its_recall_and_its_extraction() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(ScriptedModel::responder(|r| {
        if r.output_schema.is_some() {
            answer(&[
                ("Ada", "likes", "tea", None),
                ("Ada", "likes", "jazz", None),
            ])
        } else {
            ScriptedReply::text("Noted!")
        }
    }));
    let embedder = Arc::new(Counting::default());
    let rt = learning(&dir, model)
        .await
        .embedder_arc(embedder.clone())
        .build()
        .unwrap();
    let s = rt
        .open_session(Principal::local(), "assistant", "test", None)
        .await
        .unwrap();
    let message = "I like tea and jazz.";
    rt.send(s.id, message).await.unwrap();
    assert_eq!(rt.run_due_tasks().await.unwrap().completed, 1);
    let texts = embedder.texts.lock().unwrap().clone();
    assert_eq!(
        texts.iter().filter(|t| *t == message).count(),
        1,
        "recall and extraction share the message's embedding: {texts:?}"
    );
    // The two extracted facts went in one batch, after the message.
    assert_eq!(texts, vec![message, "Ada likes tea", "Ada likes jazz"]);
}

/// Midnight UTC of a day.
fn day(y: i16, m: i8, d: i8) -> Timestamp {
    let t = jiff::civil::date(y, m, d)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap();
    Timestamp::from_millis(t.timestamp().as_millisecond())
}

#[tokio::test]
async fn a_conversation_over_days_shows_its_days_and_a_question_naming_a_period_recalls_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(day(2026, 2, 14).plus(std::time::Duration::from_secs(36_000)));
    let model = Arc::new(ScriptedModel::responder(|_| ScriptedReply::text("noted")));
    let rt = Runtime::builder()
        .store(
            SqliteStore::open_with(
                dir.path().join("k.db"),
                thinklio_store_sqlite::SqliteOptions::default().clock(clock.clone()),
            )
            .await
            .unwrap(),
        )
        .model_arc(Arc::clone(&model) as Arc<dyn ChatModel>)
        .agent(AgentDefinition::new("assistant", "chat"))
        .clock(clock.clone())
        .build()
        .unwrap();
    let me = Principal::local();
    let chat = rt
        .open_session(me, "assistant", "cli", Some("diary"))
        .await
        .unwrap();
    rt.send(chat.id, "My knee started hurting on the long run")
        .await
        .unwrap();
    rt.send(chat.id, "Jonas cooked jollof rice").await.unwrap();
    let user_lines = |n: usize| -> Vec<String> {
        model.requests()[n]
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .collect()
    };
    assert_eq!(
        user_lines(1),
        vec![
            "My knee started hurting on the long run",
            "Jonas cooked jollof rice"
        ],
        "a conversation of one day shows no days"
    );
    clock.set(day(2026, 3, 22));
    rt.send(chat.id, "The physio says it is IT band syndrome")
        .await
        .unwrap();
    assert_eq!(
        user_lines(2),
        vec![
            "[2026-02-14] My knee started hurting on the long run",
            "[2026-02-14] Jonas cooked jollof rice",
            "[2026-03-22] The physio says it is IT band syndrome",
        ],
        "one that spans days shows each message's day"
    );

    // Facts said on known days, imported; months later a question names a
    // period and shares no word with what was said then.
    let said = |text: &str, at: Timestamp| {
        let mut f = NewFact::new(me.account, FactOwner::User(me.user), "Maya", "said", text);
        f.valid_at = Some(at);
        f
    };
    rt.knowledge()
        .import(
            Principal::local(),
            vec![
                said("we adopted a greyhound called Pepper", day(2026, 1, 19)),
                said("my knee started hurting on the long run", day(2026, 2, 14)),
                said("I started Portuguese lessons", day(2026, 2, 16)),
                said("the physio says it is IT band syndrome", day(2026, 3, 22)),
                said("we got the flat on Harrogate Road", day(2026, 4, 27)),
            ],
            64,
            |_| {},
        )
        .await
        .unwrap();
    clock.set(day(2026, 7, 2));
    let later = rt
        .open_session(me, "assistant", "cli", Some("later"))
        .await
        .unwrap();
    let reply = rt
        .send(
            later.id,
            "What did I tell you about in the middle of February?",
        )
        .await
        .unwrap();
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    let facts = recalled(&steps[0]);
    assert_eq!(
        facts[..2].iter().map(String::as_str).collect::<Vec<_>>(),
        vec![
            "Maya said my knee started hurting on the long run",
            "Maya said I started Portuguese lessons"
        ],
        "what was said in mid-February comes first: {facts:?}"
    );
    // And the model is told when each was said.
    let memory = model.requests().last().unwrap().messages[0].content.clone();
    assert!(memory.contains("(since 2026-02-14)"), "{memory}");
}
