//! Jobs survive SIGKILL: a worker process leaves jobs in every state that is
//! not an end (`pending`, `dispatched` to a repeatable and to an `external`
//! capability, `in_progress` waiting on subjobs and waiting on outside work)
//! with their observers' notices undelivered, and is killed. A second run
//! is killed at a random moment while it recovers; a third runs to the end.
//! Then every job has ended the way its kind demands and every observer
//! heard each change exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use thinklio_core::*;
use thinklio_store_sqlite::SqliteStore;

const ROUNDS: usize = 4;

fn spawn(dir: &Path, phase: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_job-crash-worker"))
        .arg(dir.join("jobs.db"))
        .arg(dir.join("work.log"))
        .arg(dir.join("audit.log"))
        .arg(phase)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the job crash worker starts")
}

fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_jobs_in_every_open_state_then_each_continues_or_times_out() {
    let (mut repeats, mut interrupted) = (0, 0);
    for round in 0..ROUNDS {
        let (r, i) = round_trip(round).await;
        repeats += r;
        interrupted += i;
    }
    println!(
        "over {ROUNDS} rounds: {interrupted} follow-up steps interrupted by a kill and run again; \
         {repeats} notices delivered again after a kill and dropped by the receiver"
    );
}

/// One setup, kill, killed recovery, full recovery; returns the repeated
/// notices and the follow-up steps a kill interrupted.
async fn round_trip(round: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = spawn(dir.path(), "setup");
    assert_eq!(first_line(&mut setup).trim(), "ready", "round {round}");
    setup.kill().unwrap(); // SIGKILL on Unix
    setup.wait().unwrap();

    // What the kill left behind.
    let store = SqliteStore::open(dir.path().join("jobs.db")).await.unwrap();
    let open = store.unfinished_jobs().await.unwrap();
    let mut states: Vec<(String, JobState)> = open
        .iter()
        .map(|j| (j.capability.clone(), j.state))
        .collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        states,
        [
            ("external".to_owned(), JobState::Dispatched),
            ("fan_out".to_owned(), JobState::InProgress),
            ("outside".to_owned(), JobState::InProgress),
            ("piece".to_owned(), JobState::Dispatched),
            ("repeatable".to_owned(), JobState::Dispatched),
            ("repeatable".to_owned(), JobState::Pending),
        ],
        "round {round}"
    );
    let undelivered = store
        .due_notifications(Timestamp::from_millis(i64::MAX), 1000)
        .await
        .unwrap();
    let audit_waiting: Vec<Notice> = undelivered
        .iter()
        .filter(|n| matches!(n.observer.kind, ObserverKind::Callback { .. }))
        .map(|n| n.notice)
        .collect();
    assert_eq!(
        audit_waiting,
        [Notice::Dispatched; 4],
        "round {round}: the audit observer heard nothing yet of the four dispatched jobs"
    );
    let jobs: HashMap<JobId, Job> = open.into_iter().map(|j| (j.id, j)).collect();
    drop(store);

    // A recovery killed at a random moment, then one that finishes.
    let mut killed = spawn(dir.path(), "resume");
    std::thread::sleep(Duration::from_millis(fastrand::u64(50..700)));
    let _ = killed.kill();
    killed.wait().unwrap();
    let mut last = spawn(dir.path(), "resume");
    let recovered = first_line(&mut last);
    assert!(
        recovered.starts_with("recovered"),
        "round {round}: {recovered}"
    );
    assert!(
        last.wait().unwrap().success(),
        "round {round}: the last run failed"
    );

    let store = SqliteStore::open(dir.path().join("jobs.db")).await.unwrap();
    assert!(store.unfinished_jobs().await.unwrap().is_empty());
    assert!(
        store
            .due_notifications(Timestamp::from_millis(i64::MAX), 10)
            .await
            .unwrap()
            .is_empty(),
        "round {round}: every notice was delivered"
    );
    let work = std::fs::read_to_string(dir.path().join("work.log")).unwrap();
    let runs = |job: JobId| {
        work.lines()
            .filter(|l| l.contains(&job.to_string()))
            .count()
    };
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let mut told: HashMap<JobId, Vec<String>> = HashMap::new();
    let mut ids = HashSet::new();
    for line in audit.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert!(
            ids.insert(parts[0].to_owned()),
            "round {round}: notice {} written twice",
            parts[0]
        );
        told.entry(parts[1].parse().unwrap())
            .or_default()
            .push(parts[2].to_owned());
    }

    for (id, before) in &jobs {
        let job = store.job(*id).await.unwrap();
        let expected: &[&str] = match (job.capability.as_str(), before.state) {
            ("repeatable", JobState::Dispatched) => {
                // Dispatched again with the same key after the kill.
                assert_eq!(job.state, JobState::Resolved, "round {round}");
                assert!(runs(*id) >= 2, "round {round}: it ran again");
                &["dispatched", "resolved"]
            }
            ("repeatable", _) => {
                assert_eq!(job.state, JobState::Resolved, "round {round}");
                &["dispatched", "resolved"]
            }
            ("external", _) => {
                assert_eq!(job.state, JobState::Failed, "round {round}");
                assert!(
                    job.error
                        .as_deref()
                        .unwrap()
                        .starts_with("capability.outcome_unknown")
                );
                assert_eq!(
                    runs(*id),
                    1,
                    "round {round}: an external job never runs twice"
                );
                &["dispatched", "failed"]
            }
            ("fan_out", _) => {
                assert_eq!(job.state, JobState::Resolved, "round {round}");
                let subjobs = store.subjobs(*id).await.unwrap();
                assert_eq!(subjobs.len(), 2, "round {round}: no subjob created twice");
                assert!(subjobs.iter().all(|s| s.state == JobState::Resolved));
                &["dispatched", "partial", "resolved"]
            }
            ("outside", _) => {
                assert_eq!(job.state, JobState::TimedOut, "round {round}");
                &["dispatched", "timed_out"]
            }
            ("piece", _) => {
                assert_eq!(job.state, JobState::Resolved, "round {round}");
                &[]
            }
            other => panic!("unexpected job {other:?}"),
        };
        let heard = told.get(id).cloned().unwrap_or_default();
        assert_eq!(
            heard, expected,
            "round {round}: what the audit heard of {}",
            job.capability
        );
    }

    // The follow-up observer: one finished interaction per notice after
    // `dispatched`, never two.
    let session = store
        .sessions_of_user(Principal::local().user)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let interactions = store.interactions_of_session(session.id).await.unwrap();
    assert!(store.unfinished_interactions().await.unwrap().is_empty());
    let mut inbound = HashSet::new();
    let mut follow_ups: HashMap<JobId, usize> = HashMap::new();
    let mut interrupted = 0;
    for i in interactions.iter().filter(|i| i.job_id.is_some()) {
        interrupted += store
            .steps(i.id)
            .await
            .unwrap()
            .iter()
            .filter(|s| {
                s.error
                    .as_ref()
                    .is_some_and(|e| e.code == ErrorCode::StepInterrupted)
            })
            .count();
        assert!(
            inbound.insert(i.inbound_id.clone().unwrap()),
            "round {round}: a notice followed up twice"
        );
        assert!(store.reply_of(i.id).await.unwrap().is_some());
        *follow_ups.entry(i.job_id.unwrap()).or_default() += 1;
    }
    for (id, job) in &jobs {
        let expected = match job.capability.as_str() {
            "fan_out" => 2,
            "piece" => 0,
            _ => 1,
        };
        assert_eq!(
            follow_ups.get(id).copied().unwrap_or(0),
            expected,
            "round {round}: follow-ups of {}",
            job.capability
        );
    }
    let repeats = std::fs::read_to_string(dir.path().join("audit.repeats"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    (repeats, interrupted)
}
