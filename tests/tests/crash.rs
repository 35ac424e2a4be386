//! Crash recovery with real process kills: a worker process runs many
//! interactions against one SQLite file and is SIGKILLed at random moments;
//! each restart calls `recover()`. At the end every interaction has finished,
//! every reply was delivered once, no external side effect happened twice,
//! and every step row has a legal state history.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use thinklio_core::*;

const SESSIONS: usize = 8;
const PER_SESSION: usize = 40;
const KILLS: usize = 30;

fn spawn(dir: &Path, db: &str, mode: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_crash-worker"))
        .arg(db)
        .arg(dir.join("effects.log"))
        .arg(dir.join("deliveries.log"))
        .arg(SESSIONS.to_string())
        .arg(PER_SESSION.to_string())
        .arg(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the crash worker starts")
}

/// Reads the worker's stdout up to its `recovered` line.
fn wait_recovered(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.as_mut()?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).ok()?;
    line.starts_with("recovered").then_some(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_repeats_nothing() {
    kill_and_check("direct", Backend::Sqlite).await;
}

/// The same on PostgreSQL (the server `scripts/test.sh` starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_repeats_nothing_on_postgres() {
    kill_and_check("direct", Backend::Postgres).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The same, with every message handed to a delegate agent: a kill while the
/// delegate is mid-interaction resumes both, and each parent gets its
/// delegate's answer once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delegation_resumes_child_and_parent() {
    kill_and_check("delegate", Backend::Sqlite).await;
}

/// Delegation under kills, on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delegation_resumes_child_and_parent_on_postgres() {
    kill_and_check("delegate", Backend::Postgres).await;
}

async fn kill_and_check(mode: &str, backend: Backend) {
    let delegated = mode == "delegate";
    let dir = tempfile::tempdir().unwrap();
    let db = match backend {
        Backend::Sqlite => dir.path().join("crash.db").display().to_string(),
        Backend::Postgres => {
            assert!(
                std::env::var_os("THINKLIO_POSTGRES_URL").is_some(),
                "THINKLIO_POSTGRES_URL is not set: run scripts/postgres.sh start (scripts/test.sh does)"
            );
            format!("postgres:crash_{}", uuid::Uuid::now_v7().simple())
        }
    };
    let mut live_kills = 0;
    let mut rounds = 0;
    while live_kills < KILLS {
        rounds += 1;
        assert!(
            rounds <= KILLS * 3,
            "the worker finished before it could be killed {KILLS} times"
        );
        let mut child = spawn(dir.path(), &db, mode);
        let recovered = wait_recovered(&mut child);
        assert!(
            recovered.is_some(),
            "round {rounds}: the worker did not recover"
        );
        // A PostgreSQL round trip is slower than SQLite's: the same share of
        // kills lands mid-work with a longer window.
        let window = if backend == Backend::Postgres {
            5..150
        } else {
            5..45
        };
        std::thread::sleep(Duration::from_millis(fastrand::u64(window)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL on Unix
            live_kills += 1;
        }
        child.wait().unwrap();
    }
    // A last run to the end.
    let mut child = spawn(dir.path(), &db, mode);
    let recovered = wait_recovered(&mut child).expect("the final run recovers");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the final run fails: {status}; {recovered}"
    );

    let store = thinklio_tests::open_store(&db).await.unwrap();
    let deliveries = std::fs::read_to_string(dir.path().join("deliveries.log")).unwrap();
    let mut delivered: HashMap<String, usize> = HashMap::new();
    for line in deliveries.lines() {
        *delivered
            .entry(line.split_whitespace().next().unwrap().to_owned())
            .or_default() += 1;
    }
    let effects = std::fs::read_to_string(dir.path().join("effects.log")).unwrap_or_default();
    let mut effect_keys: HashMap<String, usize> = HashMap::new();
    for line in effects.lines() {
        *effect_keys
            .entry(line.split_whitespace().next().unwrap().to_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = effect_keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "external side effects repeated: {twice:?}"
    );

    let sessions = store
        .sessions_of_user(Principal::local().user)
        .await
        .unwrap();
    assert_eq!(sessions.len(), SESSIONS);
    let mut interactions = 0;
    let mut outbox_ids = HashSet::new();
    let (mut interrupted, mut unknown, mut external_ok) = (0, 0, 0);
    let mut delegations_resumed = 0;
    for session in &sessions {
        let list = store.interactions_of_session(session.id).await.unwrap();
        let roots: Vec<_> = list
            .iter()
            .filter(|i| i.parent_interaction_id.is_none())
            .collect();
        assert_eq!(roots.len(), PER_SESSION, "no message was lost or doubled");
        if delegated {
            for root in &roots {
                let children: Vec<_> = list
                    .iter()
                    .filter(|i| i.parent_interaction_id == Some(root.id))
                    .collect();
                assert_eq!(children.len(), 1, "one delegate interaction per message");
                let child = children[0];
                assert_eq!(
                    (child.agent_id.as_str(), child.delegation_depth),
                    ("helper", 1)
                );
                let child_steps = store.steps(child.id).await.unwrap();
                let answer = child_steps
                    .iter()
                    .find(|s| s.kind == StepKind::Respond && s.state == StepState::Succeeded)
                    .expect("the delegate answered")
                    .input["text"]
                    .clone();
                let root_steps = store.steps(root.id).await.unwrap();
                let received: Vec<_> = root_steps
                    .iter()
                    .filter(|s| s.kind == StepKind::Act && s.state == StepState::Succeeded)
                    .collect();
                assert_eq!(received.len(), 1, "the parent got the answer once");
                assert_eq!(received[0].output.as_ref().unwrap()["result"], answer);
                let reply = store.reply_of(root.id).await.unwrap().unwrap();
                assert_eq!(reply.text, format!("done: {}", answer.as_str().unwrap()));
            }
        }
        for i in list {
            interactions += 1;
            let steps = store.steps(i.id).await.unwrap();
            assert_eq!(
                InteractionState::derive(&steps),
                InteractionState::Completed,
                "{}",
                i.input
            );
            if i.parent_interaction_id.is_none() {
                let reply = store.reply_of(i.id).await.unwrap().expect("a reply");
                assert!(
                    reply.delivered_at.is_some(),
                    "reply of {} delivered",
                    i.input
                );
                assert!(reply.text.starts_with("done: "), "{}", reply.text);
                outbox_ids.insert(reply.id.to_string());
            } else {
                assert!(
                    store.reply_of(i.id).await.unwrap().is_none(),
                    "a delegate writes no reply"
                );
            }
            for step in &steps {
                assert!(
                    step.state.is_terminal(),
                    "step {} left {:?}",
                    step.id,
                    step.state
                );
                let history = store.step_transitions(step.id).await.unwrap();
                assert!(
                    step::is_legal_history(&history),
                    "illegal history {history:?}"
                );
                match step.error.as_ref().map(|e| e.code.as_str()) {
                    Some(StepError::INTERRUPTED)
                        if step.capability.as_deref() == Some("ask_helper") =>
                    {
                        interrupted += 1;
                        delegations_resumed += 1;
                    }
                    Some(StepError::INTERRUPTED) => interrupted += 1,
                    Some("capability.outcome_unknown") => unknown += 1,
                    _ => {}
                }
                if step.side_effect == Some(SideEffect::External)
                    && step.state == StepState::Succeeded
                {
                    external_ok += 1;
                    assert_eq!(
                        effect_keys.get(&step.idempotency_key),
                        Some(&1),
                        "a succeeded external call happened exactly once"
                    );
                }
            }
            let acts = steps
                .iter()
                .filter(|s| s.kind == StepKind::Act && s.side_effect == Some(SideEffect::External));
            assert!(acts.count() <= 1, "an external call is never re-run");
        }
    }
    if delegated {
        assert!(
            delegations_resumed > 0,
            "no kill landed while a delegate was working"
        );
    }
    let per_message = if delegated { 2 } else { 1 };
    assert_eq!(interactions, SESSIONS * PER_SESSION * per_message);
    let delivered_ids: HashSet<_> = delivered.keys().cloned().collect();
    assert_eq!(delivered_ids, outbox_ids, "every reply reached the channel");
    assert!(
        delivered.values().all(|n| *n == 1),
        "no reply delivered twice"
    );
    let repeats = std::fs::read_to_string(dir.path().join("deliveries.repeats"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!(
        "{mode} on {}: {live_kills} kills over {rounds} rounds; {repeats} repeated deliveries dropped by the channel; {interrupted} steps re-run after interruption ({delegations_resumed} delegations resumed), \
         {unknown} external calls with unknown outcome, {external_ok} external calls succeeded",
        if backend == Backend::Postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
}
