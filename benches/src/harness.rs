//! The harness benchmark: durable steps per second, against raw committed writes.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_core::InteractionStore as _;
use thinklio_core::{AgentDefinition, FunctionCapability, Principal, Role, Runtime, SideEffect};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Steps of one benchmark interaction: context, think, act, observe, think, respond.
pub const STEPS_PER_INTERACTION: u64 = 6;

pub struct Options {
    pub interactions: u64,
    pub concurrent_sessions: u64,
    pub write: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interactions: 2_000,
            concurrent_sessions: 16,
            write: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub steps: u64,
    pub elapsed: Duration,
    /// Round trips and commits of the store over the run, when counted.
    pub store: Option<thinklio_core::store::StoreCounts>,
}

impl Measure {
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.elapsed.as_secs_f64()
    }

    pub fn micros_per_step(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.steps as f64
    }

    /// Round trips and commits per interaction, as table cells.
    pub fn per_interaction(&self) -> (String, String) {
        match self.store {
            Some(c) if self.steps > 0 => {
                let interactions = self.steps as f64 / STEPS_PER_INTERACTION as f64;
                (
                    format!("{:.1}", c.round_trips as f64 / interactions),
                    format!("{:.1}", c.commits as f64 / interactions),
                )
            }
            _ => ("n/a".into(), "n/a".into()),
        }
    }
}

pub struct Results {
    pub sequential: Measure,
    pub concurrent: Measure,
    pub raw: Measure,
    pub interactions: u64,
    pub sessions: u64,
}

#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    a: i64,
    b: i64,
}

pub(crate) fn model() -> ScriptedModel {
    ScriptedModel::responder(|r| match r.messages.last().map(|m| m.role) {
        Some(Role::User) => ScriptedReply::tool_call("c1", "add", r#"{"a": 2, "b": 3}"#),
        _ => ScriptedReply::text("2 + 3 = 5"),
    })
    .without_recording()
}

async fn runtime(path: &Path) -> Result<(Runtime, SqliteStore), BoxError> {
    let store = SqliteStore::open(path).await?;
    Ok((builder().store(store.clone()).build()?, store))
}

/// The benchmark's runtime, without its store.
pub(crate) fn builder() -> thinklio_core::RuntimeBuilder {
    let add = FunctionCapability::builder("add", "Adds two integers.")
        .side_effect(SideEffect::ReadOnly)
        .handler(|x: AddArgs| async move { Ok::<_, String>(x.a + x.b) });
    Runtime::builder()
        .model(model())
        .capability(add)
        .agent(AgentDefinition::new("bench", "scripted").capabilities(["add"]))
}

/// Runs `interactions` interactions spread over `sessions` sessions, the
/// sessions concurrently and each session's messages in order.
pub async fn thinklio(path: &Path, interactions: u64, sessions: u64) -> Result<Measure, BoxError> {
    let (rt, store) = runtime(path).await?;
    let mut ids = Vec::new();
    for s in 0..sessions {
        ids.push(
            rt.open_session(Principal::local(), "bench", "bench", Some(&format!("s{s}")))
                .await?
                .id,
        );
    }
    let per_session = interactions / sessions;
    let counted = store.counts();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in ids {
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            let mut steps = 0u64;
            for _ in 0..per_session {
                let reply = rt.send(id, "what is 2 + 3?").await?;
                steps += u64::from(reply.steps);
            }
            Ok::<_, thinklio_core::RuntimeError>(steps)
        }));
    }
    let mut steps = 0;
    for t in tasks {
        steps += t.await??;
    }
    let elapsed = started.elapsed();
    let counts = store.counts().since(counted);
    // Sanity: every step is durable and succeeded.
    let sample = SqliteStore::open(path)
        .await?
        .unfinished_interactions()
        .await?;
    if !sample.is_empty() {
        return Err(format!("{} interactions left unfinished", sample.len()).into());
    }
    Ok(Measure {
        steps,
        elapsed,
        store: Some(counts),
    })
}

/// The baseline: for each step, one committed INSERT of a step-sized row and
/// one committed UPDATE of it, with the same pragmas as the store.
pub fn raw_baseline(path: &Path, steps: u64) -> Result<Measure, BoxError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE steps (id TEXT PRIMARY KEY, interaction_id TEXT NOT NULL, seq INTEGER NOT NULL, \
         kind TEXT NOT NULL, state TEXT NOT NULL, input TEXT NOT NULL, output TEXT, updated_at INTEGER NOT NULL)",
    )?;
    let input =
        r#"{"turn":1,"index":0,"call_id":"c1","name":"add","arguments":"{\"a\": 2, \"b\": 3}"}"#;
    let started = Instant::now();
    let mut insert = conn.prepare(
        "INSERT INTO steps (id, interaction_id, seq, kind, state, input, updated_at) VALUES (?1, ?2, ?3, 'act', 'running', ?4, ?5)",
    )?;
    let mut update = conn.prepare(
        "UPDATE steps SET state = 'succeeded', output = ?2, updated_at = ?3 WHERE id = ?1",
    )?;
    for n in 0..steps {
        let id = format!("{n:036}");
        conn.execute_batch("BEGIN")?;
        insert.execute(rusqlite::params![
            id,
            "interaction",
            (n % 6) as i64,
            input,
            n as i64
        ])?;
        conn.execute_batch("COMMIT")?;
        conn.execute_batch("BEGIN")?;
        update.execute(rusqlite::params![id, r#"{"result":5}"#, n as i64])?;
        conn.execute_batch("COMMIT")?;
    }
    Ok(Measure {
        steps,
        elapsed: started.elapsed(),
        store: None,
    })
}

pub async fn run(options: &Options) -> Result<Results, BoxError> {
    let dir = tempfile::tempdir()?;
    let sequential = thinklio(&dir.path().join("sequential.db"), options.interactions, 1).await?;
    let sessions = options.concurrent_sessions.max(1);
    let concurrent = thinklio(
        &dir.path().join("concurrent.db"),
        options.interactions,
        sessions,
    )
    .await?;
    let raw = raw_baseline(&dir.path().join("raw.db"), sequential.steps)?;
    Ok(Results {
        sequential,
        concurrent,
        raw,
        interactions: options.interactions,
        sessions,
    })
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!(
        "{cpu}, {cores} cores, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

pub fn report(r: &Results) -> String {
    let mut out = String::new();
    let row = |out: &mut String, name: &str, m: &Measure, ratio: Option<f64>| {
        let _ = writeln!(
            out,
            "| {name} | {} | {:.0} | {:.1} | {} |",
            m.steps,
            m.steps_per_second(),
            m.micros_per_step(),
            ratio.map_or("1.00× (baseline)".to_owned(), |x| format!("{x:.2}×"))
        );
    };
    let _ = writeln!(
        out,
        "| run | durable steps | steps/s | µs/step | time vs raw baseline |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    let ratio = |m: &Measure| m.micros_per_step() / r.raw.micros_per_step();
    row(
        &mut out,
        "raw rusqlite: INSERT + UPDATE per step, each committed",
        &r.raw,
        None,
    );
    row(
        &mut out,
        "Thinklio harness, 1 session (one interaction at a time)",
        &r.sequential,
        Some(ratio(&r.sequential)),
    );
    let name = format!("Thinklio harness, {} sessions concurrently", r.sessions);
    row(&mut out, &name, &r.concurrent, Some(ratio(&r.concurrent)));
    out
}

pub fn main(options: &Options) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(run(options))?;
    let table = report(&results);
    println!(
        "{} interactions × {STEPS_PER_INTERACTION} steps, on {}",
        results.interactions,
        machine()
    );
    println!("{table}");
    if options.write {
        let doc = format!(
            "## Harness overhead\n\n\
             {interactions} interactions, each `context → think → act → observe → think → respond` \
             ({STEPS_PER_INTERACTION} durable steps) with an instant scripted model and a read-only Rust-function \
             capability, on a SQLite file (WAL, `synchronous = NORMAL`). Each step's outcome is committed \
             together with the start of the next step (the first step is begun on its own), with their \
             state-transition rows and events and (for `respond`) the outbox row; each interaction also writes \
             its creation, reads its session history and recalls knowledge facts (the runtime's default; with \
             no facts stored, one counting query).\n\n\
             The raw baseline, in the same run, does the same number of steps as bare rusqlite: one committed \
             `INSERT` of a step-sized row and one committed `UPDATE` of it per step, with prepared statements \
             and the same pragmas. The ratio is the price of everything the harness does around those two \
             writes.\n\n\
             Machine: {machine}.\n\n\
             {table}\n\
             Reading the figures: the harness commits once per step (a step's outcome together with the start of \
             the next), where the baseline commits twice; what costs more is everything around the commit — the \
             round trip to the store's connection thread (the store never blocks a tokio worker), the step's \
             transition rows and events, and the model and capability calls. With one session at a time every \
             step waits for its own commit; with many sessions, steps waiting together share one commit \
             (group commit), which is why the concurrent run is faster per step.\n\n\
             Reproduce:\n\n\
             ```sh\n\
             cargo run --release -p thinklio-benches -- harness --interactions {interactions} --write\n\
             ```\n",
            interactions = results.interactions,
            machine = machine(),
        );
        let path = crate::docs::write_section("harness", &doc)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_benchmark_runs_and_counts_every_step() {
        let r = run(&Options {
            interactions: 8,
            concurrent_sessions: 4,
            write: false,
        })
        .await
        .unwrap();
        assert_eq!(r.sequential.steps, 8 * STEPS_PER_INTERACTION);
        assert_eq!(r.concurrent.steps, 8 * STEPS_PER_INTERACTION);
        assert_eq!(r.raw.steps, r.sequential.steps);
        assert!(report(&r).contains("raw rusqlite"));
    }
}
