//! The suite: Thinklio beside LangGraph and the OpenAI Agents SDK on the
//! same scenarios, in one run, on one machine.
//!
//! Every measurement runs in a process of its own (this binary's `scenario`
//! subcommand for Thinklio, `benches/peers/driver.py` in the pinned virtual
//! environment for the peers), so memory figures are one scenario's alone
//! and a cold start is a real process start. All three use SQLite in WAL
//! mode with `synchronous = FULL` (the peers' default; Thinklio's
//! `Synchronous::Full`): every commit is on disk before the next step.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thinklio_store_sqlite::Synchronous;

use crate::BoxError;

mod goals;
mod report;
mod thinklio;

pub use goals::{StoreWork, goals, store_work, work_report};
pub use report::{charts, report};
pub use thinklio::thinklio;

/// What one measurement reports (the peers' driver prints the same keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Whether the system has this scenario at all.
    #[serde(default = "yes")]
    pub offered: bool,
    /// Why not, when not.
    #[serde(default)]
    pub why: Option<String>,
    /// Interactions measured.
    #[serde(default)]
    pub n: u64,
    /// Wall time of the measured part.
    #[serde(default)]
    pub seconds: f64,
    /// Interactions per second.
    #[serde(default)]
    pub per_second: f64,
    /// Latency of one interaction, median and 99th percentile.
    #[serde(default)]
    pub p50_ms: Option<f64>,
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Resident memory before the interactions started, and its peak.
    #[serde(default)]
    pub rss_base_kb: Option<u64>,
    #[serde(default)]
    pub rss_peak_kb: Option<u64>,
    /// Cold start: from spawning the process to reading its reply.
    #[serde(default)]
    pub first_reply_ms: Option<f64>,
    /// The system's version.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub reply: Option<String>,
    /// The larger run that failed, when this one is a smaller retry.
    #[serde(default)]
    pub failed_at: Option<(u64, String)>,
}

fn yes() -> bool {
    true
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            offered: true,
            why: None,
            n: 0,
            seconds: 0.0,
            per_second: 0.0,
            p50_ms: None,
            p99_ms: None,
            rss_base_kb: None,
            rss_peak_kb: None,
            first_reply_ms: None,
            version: Some(format!("thinklio {}", env!("CARGO_PKG_VERSION"))),
            reply: None,
            failed_at: None,
        }
    }
}

impl Outcome {
    /// Memory per interaction in flight, in KiB: the peak over the base,
    /// shared by the interactions that were in flight together.
    pub fn kb_per_interaction(&self) -> Option<f64> {
        let (base, peak) = (self.rss_base_kb?, self.rss_peak_kb?);
        Some(peak.saturating_sub(base) as f64 / self.n.max(1) as f64)
    }
}

/// The systems of the suite.
pub const SYSTEMS: [&str; 3] = ["thinklio", "langgraph", "openai-agents"];

/// The measurements: (key, scenario, SQLite `synchronous`, what the table calls it).
pub const SCENARIOS: [(&str, &str, &str, &str); 5] = [
    (
        "harness",
        "harness",
        "normal",
        "(a) harness overhead: interactions/s, one at a time, instant model",
    ),
    (
        "harness-full",
        "harness",
        "full",
        "(a′) the same, every commit synced to disk (`synchronous = FULL`)",
    ),
    (
        "concurrency",
        "concurrency",
        "normal",
        "(b) concurrency: interactions/s, all in flight, model answers after 50 ms",
    ),
    (
        "recovery",
        "recovery",
        "normal",
        "(c) recovery: interactions resumed/s after a stop",
    ),
    (
        "coldstart",
        "coldstart",
        "normal",
        "(d) cold start: process start to first reply",
    ),
];

/// Sizes of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub harness: u64,
    pub concurrency: u64,
    pub recovery: u64,
    pub coldstarts: u32,
    pub delay: Duration,
    pub quick: bool,
    pub write: bool,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            harness: 1_000,
            concurrency: 10_000,
            recovery: 10_000,
            coldstarts: 5,
            delay: Duration::from_millis(50),
            quick: false,
            write: false,
        }
    }

    /// About a minute, for CI.
    pub fn quick() -> Self {
        Self {
            harness: 100,
            concurrency: 300,
            recovery: 300,
            coldstarts: 2,
            quick: true,
            ..Self::full()
        }
    }

    fn n(&self, scenario: &str) -> u64 {
        match scenario {
            "harness" => self.harness,
            "concurrency" => self.concurrency,
            "recovery" => self.recovery,
            _ => 1,
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The peers' Python, after `benches/peers/setup.sh` made sure the pinned
/// packages are installed.
fn peers_python() -> Result<PathBuf, BoxError> {
    let status = Command::new("bash")
        .arg(root().join("benches/peers/setup.sh"))
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err("benches/peers/setup.sh failed (it needs python3 with venv and PyPI)".into());
    }
    Ok(root().join("target/peers-venv/bin/python"))
}

/// Runs one measurement in its own process; returns its outcome (for a
/// cold start, with the time to its reply).
fn measure(
    system: &str,
    scenario: &str,
    sync: &str,
    n: u64,
    plan: &Plan,
    python: &Path,
    dir: &Path,
) -> Result<Outcome, BoxError> {
    let db = dir.join(format!("{system}-{scenario}-{}.db", fastrand::u32(..)));
    let n = n.to_string();
    // Only (b) has a slow model; everywhere else it answers at once.
    let delay = if scenario == "concurrency" {
        plan.delay.as_millis()
    } else {
        0
    }
    .to_string();
    let mut command = if system == "thinklio" {
        let mut c = Command::new(std::env::current_exe()?);
        c.arg("scenario");
        c
    } else {
        let mut c = Command::new(python);
        c.arg(root().join("benches/peers/driver.py")).arg(system);
        c
    };
    command
        .arg(scenario)
        .args([
            "--n",
            &n,
            "--delay-ms",
            &delay,
            "--synchronous",
            sync,
            "--db",
        ])
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let first_reply = started.elapsed();
    let output = child.wait_with_output()?;
    if !output.status.success() || line.trim().is_empty() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The last line of a Python traceback (or of our own error) says what went wrong.
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(last.trim().to_owned().into());
    }
    let mut outcome: Outcome = serde_json::from_str(line.trim())?;
    if scenario == "coldstart" && outcome.offered {
        if outcome.reply.as_deref().is_none_or(|r| !r.contains('5')) {
            return Err(format!("{system} cold start answered {:?}", outcome.reply).into());
        }
        outcome.first_reply_ms = Some(first_reply.as_secs_f64() * 1e3);
    }
    Ok(outcome)
}

/// Everything measured in one run.
#[derive(Debug, Default)]
pub struct Results {
    pub rows: Vec<(String, String, Outcome)>,
    /// (e), Thinklio's alone.
    pub retrieval: Option<crate::retrieval::Figures>,
    /// Retrieval over a large layer, SQLite and PostgreSQL.
    pub layer: Option<crate::layer::Figures>,
    /// Round trips and commits per interaction, SQLite and PostgreSQL.
    pub work: Option<StoreWork>,
    pub machine: String,
    pub plan: String,
}

impl Results {
    fn get(&self, system: &str, scenario: &str) -> Option<&Outcome> {
        self.rows
            .iter()
            .find(|(s, c, _)| s == system && c == scenario)
            .map(|(_, _, o)| o)
    }
}

/// Runs every scenario on every system, with a progress bar.
pub fn run(plan: &Plan) -> Result<Results, BoxError> {
    let python = peers_python()?;
    let dir = tempfile::tempdir()?;
    let mut jobs: Vec<(&str, &str, &str, &str)> = Vec::new();
    for (key, scenario, sync, _) in SCENARIOS {
        for system in SYSTEMS {
            let repeats = if scenario == "coldstart" {
                plan.coldstarts
            } else {
                1
            };
            for _ in 0..repeats {
                jobs.push((system, key, scenario, sync));
            }
        }
    }
    let bar = indicatif::ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut results = Results {
        machine: crate::harness::machine(),
        plan: format!(
            "{} sequential, {} concurrent (model {} ms), {} recovered, {} cold starts each{}",
            plan.harness,
            plan.concurrency,
            plan.delay.as_millis(),
            plan.recovery,
            plan.coldstarts,
            if plan.quick { " (--quick)" } else { "" }
        ),
        ..Results::default()
    };
    let mut coldstarts: Vec<(String, Vec<Outcome>)> = Vec::new();
    for (system, key, scenario, sync) in jobs {
        bar.set_message(format!("{system}: {key}"));
        let n = plan.n(scenario);
        let outcome = match measure(system, scenario, sync, n, plan, &python, dir.path()) {
            Ok(o) => o,
            // A peer that cannot run the full size is measured at a tenth
            // of it, and the table says why.
            Err(e) if system != "thinklio" && n >= 100 => {
                let why = e.to_string();
                bar.println(format!(
                    "{system} {key} at {n}: {why}; measuring at {}",
                    n / 10
                ));
                let mut o = measure(system, scenario, sync, n / 10, plan, &python, dir.path())?;
                o.failed_at = Some((n, why));
                o
            }
            Err(e) => return Err(format!("{system} {key}: {e}").into()),
        };
        if scenario == "coldstart" {
            match coldstarts.iter_mut().find(|(s, _)| s == system) {
                Some((_, v)) => v.push(outcome),
                None => coldstarts.push((system.to_owned(), vec![outcome])),
            }
        } else {
            results
                .rows
                .push((system.to_owned(), key.to_owned(), outcome));
        }
        bar.inc(1);
    }
    // (e): scoped hybrid retrieval, in this process.
    bar.set_message("thinklio: retrieval");
    let minilm = root().join("target/models/all-minilm-l6-v2");
    let options = crate::retrieval::Options {
        sizes: vec![if plan.quick { 2_000 } else { 100_000 }],
        queries: if plan.quick { 100 } else { 1_000 },
        embedding: if !plan.quick && minilm.join("model.safetensors").exists() {
            crate::retrieval::Embedding::MiniLm(minilm)
        } else {
            crate::retrieval::Embedding::Offline
        },
        write: false,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    results.retrieval = rt.block_on(crate::retrieval::run(&options))?.pop();
    // Thinklio's own: the store's work per interaction and a large layer,
    // on SQLite and PostgreSQL.
    crate::stores::ensure_postgres()?;
    bar.set_message("thinklio: store work per interaction");
    results.work = Some(rt.block_on(store_work(plan))?);
    bar.set_message("thinklio: retrieval over a large layer");
    let layer = crate::layer::Options {
        facts: if plan.quick { 5_000 } else { 100_000 },
        queries: if plan.quick { 20 } else { 200 },
        embedding: options.embedding.clone(),
        postgres: true,
        write: false,
    };
    results.layer = Some(rt.block_on(crate::layer::run(&layer))?);
    bar.finish_and_clear();
    // A cold start is the median of its runs.
    for (system, mut runs) in coldstarts {
        runs.sort_by(|a, b| {
            a.first_reply_ms
                .unwrap_or(0.0)
                .total_cmp(&b.first_reply_ms.unwrap_or(0.0))
        });
        let median = runs.swap_remove(runs.len() / 2);
        results.rows.push((system, "coldstart".to_owned(), median));
    }
    Ok(results)
}

/// `all`: runs the suite, prints the table, and with `write` rewrites its
/// section of docs/benchmarks.md and the charts in docs/bench/.
pub fn main(plan: &Plan) -> Result<(), BoxError> {
    let results = run(plan)?;
    let table = report(&results);
    println!("{table}");
    let goals = goals(&results);
    println!("{goals}");
    let work = results.work.as_ref().map(work_report).unwrap_or_default();
    println!("{work}");
    let layer = results
        .layer
        .as_ref()
        .map(crate::layer::report)
        .unwrap_or_default();
    println!("{layer}");
    if plan.write {
        crate::docs::write_section("goals", &goals)?;
        crate::docs::write_section("work", &work)?;
        crate::docs::write_section("layer", &layer)?;
        let path = crate::docs::write_section("peers", &table)?;
        let dir = root().join("docs/bench");
        std::fs::create_dir_all(&dir)?;
        for (name, svg) in charts(&results) {
            std::fs::write(dir.join(name), svg)?;
        }
        println!("wrote {} and {}", path.display(), dir.display());
    }
    Ok(())
}

/// `scenario NAME --n N --db PATH --delay-ms MS`: one of Thinklio's
/// measurements, printed as one JSON line (run by `all` in a process of its own).
pub fn scenario_main(args: &[String]) -> Result<bool, BoxError> {
    let Some(name) = args.first() else {
        return Ok(false);
    };
    let (mut n, mut db, mut delay, mut sync) = (100, None, Duration::ZERO, Synchronous::Normal);
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match (arg.as_str(), rest.next().map(String::as_str)) {
            ("--n", Some(v)) => n = v.parse()?,
            ("--db", Some(v)) => db = Some(PathBuf::from(v)),
            ("--delay-ms", Some(v)) => delay = Duration::from_millis(v.parse()?),
            ("--synchronous", Some("normal")) => sync = Synchronous::Normal,
            ("--synchronous", Some("full")) => sync = Synchronous::Full,
            _ => return Ok(false),
        }
    }
    let Some(db) = db else {
        return Ok(false);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(thinklio(name, n, &db, delay, sync))?;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(true)
}
