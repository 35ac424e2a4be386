//! Many worker processes on one PostgreSQL database: three `pg-worker`
//! processes share 300 interactions (100 of which dispatch a job) submitted
//! to 30 sessions; one is SIGKILLed mid-run. At the end every interaction and
//! job has finished, nothing ran twice, and each session's messages ran one
//! at a time, in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thinklio_core::*;
use thinklio_llm::ScriptedModel;

const SESSIONS: usize = 30;
const PER_SESSION: usize = 10;

fn spawn(schema: &str, log: &std::path::Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg-worker"))
        .arg(schema)
        .arg(log)
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
    let mut config = RuntimeConfig::default();
    config.shared_store = true;
    let driver = Runtime::builder()
        .store_arc(store.clone())
        .model(ScriptedModel::new([]))
        .agent(AgentDefinition::new("worker", "scripted"))
        .config(config)
        .build()
        .unwrap();
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
