//! Many worker processes on one PostgreSQL database: three `pg-worker`
//! processes share 300 interactions (100 of which dispatch a job) submitted
//! to 30 sessions; one is SIGKILLed mid-run. At the end every interaction and
//! job has finished, nothing ran twice, and each session's messages ran one
//! at a time, in order. And a graceful stop: a worker with 100 interactions
//! in flight gets SIGTERM; each run ends at its step, the sessions go to the
//! other worker at once (not after their leases), and nothing runs twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thinklio_core::*;
use thinklio_llm::ScriptedModel;

const SESSIONS: usize = 30;
const PER_SESSION: usize = 10;

fn spawn(schema: &str, log: &std::path::Path) -> Child {
    spawn_with(schema, log, &[])
}

/// A `pg-worker` with extra arguments (its mode), once it says `ready`.
fn spawn_with(schema: &str, log: &std::path::Path, mode: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg-worker"))
        .arg(schema)
        .arg(log)
        .args(mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the worker starts");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the worker started");
    child
}

/// A runtime on the shared store that only opens sessions and submits
/// messages for the workers.
fn driver(store: &Arc<dyn Store>) -> Runtime {
    let mut config = RuntimeConfig::default();
    config.shared_store = true;
    Runtime::builder()
        .store_arc(Arc::clone(store))
        .model(ScriptedModel::new([]))
        .agent(AgentDefinition::new("worker", "scripted"))
        .config(config)
        .build()
        .unwrap()
}

/// Completed interactions among `ids`.
async fn completed(store: &dyn Store, ids: &[InteractionId]) -> usize {
    let mut n = 0;
    for id in ids {
        if InteractionState::derive(&store.steps(*id).await.unwrap()) == InteractionState::Completed
        {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_share_the_work_and_survive_a_kill() {
    assert!(
        std::env::var_os("THINKLIO_POSTGRES_URL").is_some(),
        "THINKLIO_POSTGRES_URL is not set: run scripts/postgres.sh start (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("work.log");
    let schema = format!("multi_{}", uuid::Uuid::now_v7().simple());
    let store = thinklio_tests::open_store(&format!("postgres:{schema}"))
        .await
        .unwrap();
    let driver = driver(&store);
    let mut submitted: HashMap<SessionId, Vec<InteractionId>> = HashMap::new();
    let mut all = Vec::new();
    for s in 0..SESSIONS {
        let session = driver
            .open_session(
                Principal::local(),
                "worker",
                "multi",
                Some(&format!("s{s}")),
            )
            .await
            .unwrap();
        for i in 0..PER_SESSION {
            let n = s * PER_SESSION + i;
            let text = if n.is_multiple_of(3) {
                format!("msg {n} job")
            } else {
                format!("msg {n}")
            };
            let interaction = driver
                .submit(session.id, Inbound::with_id(text, format!("m{i}")))
                .await
                .unwrap();
            submitted
                .entry(session.id)
                .or_default()
                .push(interaction.id);
            all.push(interaction.id);
        }
    }

    let started = Instant::now();
    let mut workers: Vec<Child> = (0..3).map(|_| spawn(&schema, &log)).collect();
    // Kill one worker once a fifth of the messages are answered.
    while store.unfinished_interactions().await.unwrap().len() > all.len() * 4 / 5 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the workers make no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    workers[0].kill().unwrap(); // SIGKILL on Unix
    workers[0].wait().unwrap();
    let killed_at = completed(&*store, &all).await;

    // Wait for everything: messages, jobs, notices, follow-ups.
    loop {
        let done = completed(&*store, &all).await == all.len()
            && store.unfinished_jobs().await.unwrap().is_empty()
            && store
                .due_notifications(Timestamp::from_millis(i64::MAX), 1)
                .await
                .unwrap()
                .is_empty()
            && store.unfinished_interactions().await.unwrap().is_empty();
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the work did not finish after a worker was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    for w in &mut workers[1..] {
        w.kill().unwrap();
        w.wait().unwrap();
    }

    // Nothing ran twice.
    let work = std::fs::read_to_string(&log).unwrap();
    let mut seen = HashSet::new();
    let (mut records, mut jobs_run) = (0, 0);
    for line in work.lines() {
        let mut parts = line.split_whitespace();
        let kind = parts.next().unwrap();
        let key = parts.next().unwrap().to_owned();
        assert!(
            seen.insert((kind.to_owned(), key.clone())),
            "ran twice: {line}"
        );
        if kind == "record" {
            records += 1
        } else {
            jobs_run += 1
        }
    }

    // Every job ended; every session's messages ran alone and in order.
    let events = store.events_after(0, 1_000_000).await.unwrap();
    let mut first_start: HashMap<InteractionId, i64> = HashMap::new();
    let mut completion: HashMap<InteractionId, i64> = HashMap::new();
    for e in &events {
        let Some(i) = e.interaction_id else { continue };
        match e.kind {
            EventKind::StepStarted => {
                first_start.entry(i).or_insert(e.seq);
            }
            EventKind::InteractionCompleted => {
                completion.insert(i, e.seq);
            }
            _ => {}
        }
    }
    let (mut jobs, mut follow_ups) = (0, 0);
    let mut job_states: HashMap<JobState, usize> = HashMap::new();
    for (session, ids) in &submitted {
        let interactions = store.interactions_of_session(*session).await.unwrap();
        for w in ids.windows(2) {
            assert!(
                completion[&w[0]] < first_start[&w[1]],
                "session {session}: a message started before the one before it ended"
            );
        }
        // No two top-level interactions of the session overlapped.
        let mut spans: Vec<(i64, i64)> = interactions
            .iter()
            .filter(|i| i.parent_interaction_id.is_none())
            .map(|i| (first_start[&i.id], completion[&i.id]))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(
                w[0].1 < w[1].0,
                "session {session}: two interactions ran at once"
            );
        }
        for i in &interactions {
            if i.job_id.is_some() {
                follow_ups += 1;
            }
            for step in store.steps(i.id).await.unwrap() {
                if let Some(output) = &step.output
                    && let Some(job) = output["result"]["job_id"].as_str()
                {
                    jobs += 1;
                    let job = store.job(job.parse().unwrap()).await.unwrap();
                    assert!(job.state.is_terminal(), "job {} {}", job.id, job.state);
                    *job_states.entry(job.state).or_default() += 1;
                }
            }
        }
    }
    assert_eq!(jobs, SESSIONS * PER_SESSION / 3);
    assert_eq!(job_states.values().sum::<usize>(), jobs);
    println!(
        "{} interactions and {jobs} jobs on 3 workers, one killed after {killed_at} interactions: \
         all finished in {:.1} s; {records} records and {jobs_run} job runs, none twice; \
         jobs ended {job_states:?}; {follow_ups} follow-ups",
        all.len(),
        elapsed.as_secs_f64()
    );
}

/// Reads `child`'s stdout lines until one starts with `prefix`; returns it.
fn read_until(lines: &mut impl Iterator<Item = std::io::Result<String>>, prefix: &str) -> String {
    for line in lines {
        let line = line.unwrap();
        if line.starts_with(prefix) {
            return line;
        }
    }
    panic!("the worker exited before saying `{prefix}`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_a_workers_interactions_to_the_other_at_once() {
    const N: usize = 100;
    assert!(
        std::env::var_os("THINKLIO_POSTGRES_URL").is_some(),
        "THINKLIO_POSTGRES_URL is not set: run scripts/postgres.sh start (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("work.log");
    let schema = format!("term_{}", uuid::Uuid::now_v7().simple());
    let store = thinklio_tests::open_store(&format!("postgres:{schema}"))
        .await
        .unwrap();
    let driver = driver(&store);
    let mut all = Vec::new();
    for s in 0..N {
        let session = driver
            .open_session(Principal::local(), "worker", "term", Some(&format!("s{s}")))
            .await
            .unwrap();
        let interaction = driver
            .submit(session.id, Inbound::with_id(format!("msg {s}"), "m"))
            .await
            .unwrap();
        all.push(interaction.id);
    }

    // Worker A takes every session; each run waits in its first model call
    // (A says how many wait) until A is told to stop.
    let mut a = Command::new(env!("CARGO_BIN_EXE_pg-worker"))
        .args([&schema, log.to_str().unwrap(), "graceful"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(a.stdout.take().unwrap()).lines();
    read_until(&mut said, "ready");
    read_until(&mut said, &format!("thinking {N}"));
    // Worker B starts (as wide as A); it finds nothing to claim while A
    // holds the sessions.
    let mut b = spawn_with(&schema, &log, &["wide"]);

    let status = Command::new("kill")
        .args(["-TERM", &a.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = read_until(&mut said, "stopped ");
    assert!(a.wait().unwrap().success(), "A exits cleanly");
    let exited = Instant::now();
    let counts: Vec<usize> = stopped
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        (counts[0], counts[1]),
        (N, 0),
        "every run stopped at its step, none cut off: {stopped}"
    );

    // B continues and finishes every interaction (watched sparingly, so the
    // watching does not slow B down on a small machine).
    while completed(&*store, &all).await < N {
        assert!(
            exited.elapsed() < Duration::from_secs(120),
            "B did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // When B began each one's next step (its call), from the store's clock,
    // against when A exited: at once, not after A's 30 s leases.
    let exit_ms = SystemClock.now().as_millis() - exited.elapsed().as_millis() as i64;
    let mut continued_at = Vec::new();
    for id in &all {
        let steps = store.steps(*id).await.unwrap();
        let act = steps.iter().find(|s| s.kind == StepKind::Act).unwrap();
        continued_at.push(act.created_at.as_millis() - exit_ms);
    }
    continued_at.sort();
    let last = continued_at[N - 1];
    assert!(
        last < 30_000,
        "B continued the last interaction {last} ms after A exited: it waited for a lease"
    );
    b.kill().unwrap();
    b.wait().unwrap();

    // Nothing lost, nothing twice: each interaction's steps all succeeded
    // (none settled as interrupted), A's first call and B's rest, and each
    // call ran once.
    for id in &all {
        let steps = store.steps(*id).await.unwrap();
        thinklio_tests::assert_one_call(&steps, &format!("interaction {id}"));
    }
    let work = std::fs::read_to_string(&log).unwrap();
    let records: HashSet<&str> = work.lines().collect();
    assert_eq!(work.lines().count(), N, "{work}");
    assert_eq!(records.len(), N, "a call ran twice");
    println!(
        "SIGTERM with {N} interactions in flight: all stopped between steps; the other worker \
         began the next step of the first {} ms and of the last {last} ms after the first \
         exited (median {} ms)",
        continued_at[0],
        continued_at[N / 2]
    );
}
