//! Crash recovery with real process kills: a worker process runs many
//! interactions against one store and is SIGKILLed again and again; each
//! restart calls `recover()`. At the end every interaction has finished,
//! every reply was delivered once, no external side effect happened twice,
//! and every step row has a legal state history.
//!
//! Most kills land where the worker says it is: it is told a kill point
//! (inside a model call of either agent, around the external side effect,
//! around a reply's delivery), stops there, prints `paused POINT`, and is
//! killed then, so every point is covered on a slow machine as on a fast
//! one. Kills at random moments come on top, for what nobody thought of.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use thinklio_core::*;

const SESSIONS: usize = 8;
const PER_SESSION: usize = 40;
/// Kills at each announced point.
const PER_POINT: usize = 4;
/// Kills at random moments, besides.
const RANDOM_KILLS: usize = 10;

/// The worker's kill points (see `crash_worker.rs`).
const POINTS: [&str; 5] = [
    "think:worker",
    "effect:before",
    "effect:after",
    "deliver:before",
    "deliver:after",
];

/// A worker process and the lines it prints.
struct Worker {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

fn spawn(dir: &Path, db: &str, mode: &str, kill: Option<String>) -> Worker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-worker"))
        .arg(db)
        .arg(dir.join("effects.log"))
        .arg(dir.join("deliveries.log"))
        .arg(SESSIONS.to_string())
        .arg(PER_SESSION.to_string())
        .arg(mode)
        .args(kill)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the crash worker starts");
    let stdout = child.stdout.take().expect("the worker's stdout is piped");
    Worker {
        child,
        lines: BufReader::new(stdout).lines(),
    }
}

impl Worker {
    fn next_line(&mut self) -> Option<String> {
        self.lines.next()?.ok()
    }

    /// Reads the worker's stdout up to its `recovered` line.
    fn wait_recovered(&mut self) -> Option<String> {
        self.next_line().filter(|l| l.starts_with("recovered"))
    }

    /// Reads on until the worker says it paused at `point`: `Some(true)`
    /// when that was while it recovered, `None` when it ended without
    /// reaching it.
    fn wait_paused(&mut self, point: &str) -> Option<bool> {
        let mut recovering = true;
        while let Some(line) = self.next_line() {
            if line.starts_with("recovered") {
                recovering = false;
            } else if line == format!("paused {point}") {
                return Some(recovering);
            }
        }
        None
    }
}

/// How one round ends.
enum Round {
    /// Killed where the worker says it stopped.
    At(&'static str),
    /// Killed after a random wait, wherever it is.
    Random,
}

/// Every announced point `PER_POINT` times, in turn, with the random kills
/// spread between the passes.
fn schedule(points: &[&'static str]) -> Vec<Round> {
    let mut rounds = Vec::new();
    for pass in 0..PER_POINT {
        rounds.extend(points.iter().map(|p| Round::At(p)));
        let random = RANDOM_KILLS * (pass + 1) / PER_POINT - RANDOM_KILLS * pass / PER_POINT;
        rounds.extend((0..random).map(|_| Round::Random));
    }
    rounds
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

/// Calls that wait for a decision, decided while the worker is killed again
/// and again (also right after a proposal, before any decision): no call
/// runs without an approval, none runs twice, a rejected one never runs,
/// and every approved one is acted on (or, killed inside the call, reported
/// as `outcome_unknown`, never repeated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_approvals_pending_and_decided_runs_nothing_unapproved_or_twice() {
    kill_and_check("approve", Backend::Sqlite).await;
}

/// Approvals under kills, on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_approvals_pending_and_decided_runs_nothing_unapproved_or_twice_on_postgres() {
    kill_and_check("approve", Backend::Postgres).await;
}

/// Approvals inside a delegate: the helper's calls wait for decisions that
/// pause the worker above it; kills land before a decision, in either
/// agent's model call, around the effect and the delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_approvals_inside_a_delegate_runs_nothing_unapproved_or_twice() {
    kill_and_check("approve-delegate", Backend::Sqlite).await;
}

/// Approvals inside a delegate under kills, on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_approvals_inside_a_delegate_runs_nothing_unapproved_or_twice_on_postgres() {
    kill_and_check("approve-delegate", Backend::Postgres).await;
}

/// Delegation under kills, on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delegation_resumes_child_and_parent_on_postgres() {
    kill_and_check("delegate", Backend::Postgres).await;
}

async fn kill_and_check(mode: &str, backend: Backend) {
    let delegated = mode.contains("delegate");
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
    let approving = mode.starts_with("approve");
    let mut points = POINTS.to_vec();
    if delegated {
        points.insert(0, "think:helper");
    }
    if approving {
        points.insert(0, "decide:before");
    }
    let (mut live_kills, mut random_kills, mut kills_in_recovery) = (0, 0, 0);
    let mut killed_at: HashMap<&str, usize> = HashMap::new();
    let plan = schedule(&points);
    let rounds = plan.len();
    for (round, how) in plan.into_iter().enumerate() {
        // The chosen visit of the point varies, so kills land early and
        // late in a process's life.
        let kill = match how {
            Round::At(point) => Some(format!("{point}:{}", fastrand::usize(1..=6))),
            Round::Random => None,
        };
        let mut worker = spawn(dir.path(), &db, mode, kill);
        match how {
            Round::At(point) => {
                // A point may be reached while the worker recovers what the
                // last kill interrupted: a kill during recovery.
                let during_recovery = worker.wait_paused(point).unwrap_or_else(|| {
                    panic!("round {round}: the worker ended its work without reaching {point}")
                });
                *killed_at.entry(point).or_default() += 1;
                kills_in_recovery += usize::from(during_recovery);
            }
            Round::Random => {
                assert!(
                    worker.wait_recovered().is_some(),
                    "round {round}: the worker did not recover"
                );
                // A PostgreSQL round trip is slower than SQLite's: the same
                // share of kills lands mid-work with a longer window.
                let window = if backend == Backend::Postgres {
                    5..150
                } else {
                    5..45
                };
                std::thread::sleep(Duration::from_millis(fastrand::u64(window)));
            }
        }
        if worker.child.try_wait().unwrap().is_none() {
            worker.child.kill().unwrap(); // SIGKILL on Unix
            live_kills += 1;
            if matches!(how, Round::Random) {
                random_kills += 1;
            }
        }
        worker.child.wait().unwrap();
    }
    for point in &points {
        assert_eq!(
            killed_at.get(point),
            Some(&PER_POINT),
            "every kill point was killed at"
        );
    }
    // A last run to the end.
    let mut worker = spawn(dir.path(), &db, mode, None);
    let recovered = worker.wait_recovered().expect("the final run recovers");
    while worker.next_line().is_some() {}
    let status = worker.child.wait().unwrap();
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
    // Parents whose call waited with their delegate for a decision.
    let mut parents_paused = 0;
    let (mut approved_ran, mut rejected) = (0, 0);
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
                // (The attempt that waited may be one a kill interrupted.)
                let mut paused = false;
                for act in root_steps.iter().filter(|s| s.kind == StepKind::Act) {
                    let history = store.step_transitions(act.id).await.unwrap();
                    paused |= history.iter().any(|t| t.to == StepState::Waiting);
                }
                parents_paused += usize::from(paused);
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
                match step.error.as_ref().map(|e| e.code) {
                    Some(ErrorCode::StepInterrupted)
                        if step.capability.as_deref() == Some("ask_helper") =>
                    {
                        interrupted += 1;
                        delegations_resumed += 1;
                    }
                    Some(ErrorCode::StepInterrupted) => interrupted += 1,
                    Some(ErrorCode::CapabilityOutcomeUnknown) => unknown += 1,
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
            // (An interactive act interrupted before anyone approved it never
            // ran its call: it is proposed again, and does not count.)
            let acts = steps.iter().filter(|s| {
                s.kind == StepKind::Act
                    && s.side_effect == Some(SideEffect::External)
                    && !(s.mode == StepMode::Interactive
                        && s.error.as_ref().map(|e| e.code) == Some(ErrorCode::StepInterrupted))
            });
            assert!(acts.count() <= 1, "an external call is never re-run");
            if approving {
                // An attempt interrupted while it was being proposed never
                // ran; the next attempt carries the decision.
                let decided_acts = steps.iter().filter(|s| {
                    s.capability.as_deref() == Some("record")
                        && s.error.as_ref().map(|e| e.code) != Some(ErrorCode::StepInterrupted)
                });
                for act in decided_acts {
                    let n: usize = i.input.trim_start_matches("ext ").parse().unwrap();
                    let decided = store.decision(act.id).await.unwrap().unwrap_or_else(|| {
                        panic!("the call of {} ran without a decision", i.input)
                    });
                    let effect = effect_keys.get(&act.idempotency_key).copied().unwrap_or(0);
                    if n % 4 == 2 {
                        rejected += 1;
                        assert!(matches!(
                            decided.decision,
                            approval::Decision::Reject { .. }
                        ));
                        assert_eq!(effect, 0, "a rejected call never runs");
                        assert_eq!(
                            act.error.as_ref().map(|e| e.code),
                            Some(ErrorCode::ApprovalRejected)
                        );
                    } else {
                        assert_eq!(decided.decision, approval::Decision::Approve);
                        match act.state {
                            StepState::Succeeded => {
                                approved_ran += 1;
                                assert_eq!(effect, 1, "an approved call ran once");
                            }
                            _ => assert_eq!(
                                act.error.as_ref().map(|e| e.code),
                                Some(ErrorCode::CapabilityOutcomeUnknown),
                                "an approved call that did not succeed was killed inside it"
                            ),
                        }
                    }
                }
            }
        }
    }
    // What the announced kills guarantee, whatever the machine's speed.
    if delegated {
        assert!(
            delegations_resumed > 0,
            "a kill inside the delegate's model call resumes the delegation"
        );
    }
    assert!(
        interrupted > 0,
        "a kill inside a model call re-runs its step"
    );
    assert!(
        unknown > 0,
        "a kill around the side effect leaves its outcome unknown"
    );
    if approving && delegated {
        assert_eq!(
            parents_paused,
            SESSIONS * PER_SESSION / 2,
            "every parent whose delegate made an external call waited with it"
        );
    }
    if approving {
        assert!(
            approved_ran > 0 && rejected > 0,
            "{approved_ran} approved ran, {rejected} rejected"
        );
        let applied: Vec<usize> = effects
            .lines()
            .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(
            applied.iter().all(|n| n % 4 != 2),
            "no rejected call left an effect: {applied:?}"
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
    assert!(
        repeats > 0,
        "a kill after a delivery delivers the reply again, and the channel drops it"
    );
    println!(
        "{mode} on {}: {live_kills} kills over {rounds} rounds ({random_kills} at random moments, {kills_in_recovery} while recovering); {repeats} repeated deliveries dropped by the channel; {interrupted} steps re-run after interruption ({delegations_resumed} delegations resumed, {parents_paused} parents paused with their delegate), \
         {unknown} external calls with unknown outcome, {external_ok} external calls succeeded",
        if backend == Backend::Postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
}
