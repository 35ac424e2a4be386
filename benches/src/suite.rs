//! The suite: Thinklio beside LangGraph and the OpenAI Agents SDK on the
//! same scenarios, in one run, on one machine.
//!
//! Every measurement runs in a process of its own (this binary's `scenario`
//! subcommand for Thinklio, `benches/peers/driver.py` in the pinned virtual
//! environment for the peers), so memory figures are one scenario's alone
//! and a cold start is a real process start. All three use SQLite in WAL
//! mode with `synchronous = FULL` (the peers' default; Thinklio's
//! `Synchronous::Full`): every commit is on disk before the next step.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thinklio_core::{
    ChatModel, ChatRequest, ChatResponse, ChatStream, ModelError, Principal, Runtime,
};
use thinklio_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};

use crate::BoxError;

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

/// The fake model of every system: asks for `add(2, 3)`, then answers with
/// the result; each call takes `delay` (a provider's latency).
struct FakeModel {
    scripted: thinklio_llm::ScriptedModel,
    delay: Duration,
}

#[async_trait::async_trait]
impl ChatModel for FakeModel {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.scripted.chat(request).await
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.scripted.chat_stream(request).await
    }
}

async fn runtime(db: &Path, delay: Duration, sync: Synchronous) -> Result<Runtime, BoxError> {
    let store = SqliteStore::open_with(db, SqliteOptions::default().synchronous(sync)).await?;
    Ok(crate::harness::builder()
        .model(FakeModel {
            scripted: crate::harness::model(),
            delay,
        })
        .store(store)
        .build()?)
}

/// (resident, peak resident) memory of this process, in KiB.
fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

fn timed(n: u64, elapsed: Duration, mut latencies: Vec<f64>, base_kb: u64) -> Outcome {
    latencies.sort_by(f64::total_cmp);
    Outcome {
        offered: true,
        n,
        seconds: elapsed.as_secs_f64(),
        per_second: n as f64 / elapsed.as_secs_f64(),
        p50_ms: Some(percentile(&latencies, 50.0) * 1e3),
        p99_ms: Some(percentile(&latencies, 99.0) * 1e3),
        rss_base_kb: Some(base_kb),
        rss_peak_kb: Some(memory_kb().1),
        version: Some(format!("thinklio {}", env!("CARGO_PKG_VERSION"))),
        ..Outcome::default()
    }
}

async fn session(rt: &Runtime, key: &str) -> Result<thinklio_core::SessionId, BoxError> {
    Ok(rt
        .open_session(Principal::local(), "bench", "bench", Some(key))
        .await?
        .id)
}

/// Runs one scenario of Thinklio's in this process and returns its outcome.
pub async fn thinklio(
    scenario: &str,
    n: u64,
    db: &Path,
    delay: Duration,
    sync: Synchronous,
) -> Result<Outcome, BoxError> {
    match scenario {
        "coldstart" => {
            let rt = runtime(db, Duration::ZERO, sync).await?;
            rt.recover().await?;
            let id = session(&rt, "cold").await?;
            let reply = rt.send(id, "what is 2 + 3?").await?;
            Ok(Outcome {
                reply: Some(reply.text),
                ..Outcome::default()
            })
        }
        "harness" => {
            let rt = runtime(db, Duration::ZERO, sync).await?;
            let warm = session(&rt, "warm-up").await?;
            rt.send(warm, "what is 2 + 3?").await?;
            let base = memory_kb().0;
            let mut latencies = Vec::with_capacity(n as usize);
            let started = Instant::now();
            for i in 0..n {
                let t = Instant::now();
                let id = session(&rt, &format!("t{i}")).await?;
                let reply = rt.send(id, "what is 2 + 3?").await?;
                latencies.push(t.elapsed().as_secs_f64());
                if reply.text != "2 + 3 = 5" {
                    return Err(format!("unexpected reply {:?}", reply.text).into());
                }
            }
            Ok(timed(n, started.elapsed(), latencies, base))
        }
        "concurrency" => {
            let rt = runtime(db, delay, sync).await?;
            let warm = session(&rt, "warm-up").await?;
            rt.send(warm, "what is 2 + 3?").await?;
            let base = memory_kb().0;
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..n {
                let rt = rt.clone();
                tasks.spawn(async move {
                    let t = Instant::now();
                    let id = session(&rt, &format!("c{i}")).await?;
                    let reply = rt.send(id, "what is 2 + 3?").await?;
                    if reply.text != "2 + 3 = 5" {
                        return Err::<f64, BoxError>(
                            format!("unexpected reply {:?}", reply.text).into(),
                        );
                    }
                    Ok(t.elapsed().as_secs_f64())
                });
            }
            let mut latencies = Vec::with_capacity(n as usize);
            while let Some(done) = tasks.join_next().await {
                latencies.push(done??);
            }
            Ok(timed(n, started.elapsed(), latencies, base))
        }
        "recovery" => {
            // N messages recorded and not answered: a process that stopped
            // right after taking them.
            {
                let rt = runtime(db, Duration::ZERO, sync).await?;
                for i in 0..n {
                    let id = session(&rt, &format!("r{i}")).await?;
                    rt.submit(id, "what is 2 + 3?").await?;
                }
            }
            let rt = runtime(db, Duration::ZERO, sync).await?;
            let started = Instant::now();
            let report = rt.recover().await?;
            let elapsed = started.elapsed();
            if report.completed as u64 != n {
                return Err(format!("recover completed {} of {n}", report.completed).into());
            }
            Ok(Outcome {
                offered: true,
                n,
                seconds: elapsed.as_secs_f64(),
                per_second: n as f64 / elapsed.as_secs_f64(),
                version: Some(format!("thinklio {}", env!("CARGO_PKG_VERSION"))),
                ..Outcome::default()
            })
        }
        other => Err(format!("unknown scenario {other}").into()),
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

fn system_name(system: &str) -> &str {
    match system {
        "thinklio" => "Thinklio",
        "langgraph" => "LangGraph + SqliteSaver",
        "openai-agents" => "OpenAI Agents SDK + SQLiteSession",
        other => other,
    }
}

/// The figure a scenario is compared on, and whether higher is better.
fn headline(scenario: &str, o: &Outcome) -> Option<(f64, bool)> {
    if !o.offered {
        return None;
    }
    match scenario {
        "coldstart" => o.first_reply_ms.map(|ms| (ms, false)),
        _ => Some((o.per_second, true)),
    }
}

fn cell(scenario: &str, system: &str, o: Option<&Outcome>, thinklio: Option<&Outcome>) -> String {
    let Some(o) = o else {
        return "not measured".to_owned();
    };
    if !o.offered {
        return "not offered".to_owned();
    }
    let Some((value, higher_better)) = headline(scenario, o) else {
        return "not offered".to_owned();
    };
    let mut text = match scenario {
        "coldstart" => format!("{value:.0} ms"),
        _ => format!("{value:.0}/s"),
    };
    if o.failed_at.is_some() {
        let _ = write!(text, " at {} in flight", o.n);
    }
    if let (Some(p50), Some(p99)) = (o.p50_ms, o.p99_ms)
        && scenario == "concurrency"
    {
        let _ = write!(text, "; p50 {p50:.0} ms, p99 {p99:.0} ms");
    }
    if scenario == "concurrency"
        && let Some(kb) = o.kb_per_interaction()
    {
        let _ = write!(text, "; {kb:.1} KiB/interaction");
    }
    if let Some((base, _)) = thinklio.and_then(|t| headline(scenario, t))
        && system != "thinklio"
    {
        // Thinklio's advantage: how many times better it does.
        let ratio = if higher_better {
            base / value
        } else {
            value / base
        };
        let _ = write!(text, " (Thinklio {ratio:.1}×)");
    }
    text
}

/// The Markdown section.
pub fn report(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Side by side: Thinklio, LangGraph, OpenAI Agents SDK\n"
    );
    let _ = writeln!(
        out,
        "Measured in one run of `cargo run --release -p thinklio-benches -- all --write` on {}: {}. \
         Each figure comes from a process of its own. Every system runs the same interaction — the model asks \
         for `add(2, 3)`, the tool answers, the model replies `5` — against a fake model, durably on SQLite in WAL mode with `synchronous = NORMAL` (a commit survives \
         a process kill; Thinklio's default), set on the peers' connections too, except in (a′), where every \
         system syncs each commit to disk (`FULL`, the peers' default). \"(Thinklio n×)\" is how many times \
         better Thinklio did.\n",
        r.machine, r.plan
    );
    let _ = writeln!(
        out,
        "| scenario | {} |",
        SYSTEMS.map(system_name).join(" | ")
    );
    let _ = writeln!(out, "| --- | {} |", SYSTEMS.map(|_| "---").join(" | "));
    for (key, scenario, _, label) in SCENARIOS {
        let thinklio = r.get("thinklio", key);
        let cells: Vec<String> = SYSTEMS
            .iter()
            .map(|s| cell(scenario, s, r.get(s, key), thinklio))
            .collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    let retrieval = r.retrieval.as_ref().map_or_else(
        || "not measured".to_owned(),
        |f| {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms over {} facts ({:.0} visible); vector recall@10 {:.3}",
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3,
                f.facts,
                f.visible_mean,
                f.vector_recall
            )
        },
    );
    let _ = writeln!(
        out,
        "| (e) scoped hybrid retrieval: one search within a user's visibility | {retrieval} | not measured | not measured |\n"
    );
    let versions: Vec<String> = SYSTEMS
        .iter()
        .filter_map(|s| {
            r.rows
                .iter()
                .find(|(sys, _, o)| sys == s && o.version.is_some())
        })
        .filter_map(|(_, _, o)| o.version.clone())
        .collect();
    let _ = writeln!(out, "Versions: {}.\n", versions.join("; "));
    let notes: Vec<String> = r
        .rows
        .iter()
        .filter(|(_, _, o)| !o.offered)
        .map(|(s, c, o)| {
            format!(
                "{} has no {c}: {}.",
                system_name(s),
                o.why.as_deref().unwrap_or("not offered")
            )
        })
        .collect();
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    for (system, key, o) in &r.rows {
        if let Some((n, why)) = &o.failed_at {
            let _ = writeln!(
                out,
                "- {} did not finish {key} with {n} interactions ({why}); its figure is at {}.",
                system_name(system),
                o.n
            );
        }
    }
    let _ = writeln!(
        out,
        "- What the peers run: LangGraph, a `StateGraph` (model node, `ToolNode`, conditional edge) compiled with \
         `SqliteSaver` (`AsyncSqliteSaver` for (b)), invoked with `durability=\"sync\"`; its recovery is resuming \
         threads stopped by `interrupt_before=[\"tools\"]`. The Agents SDK, an `Agent` with a `function_tool`, run by \
         `Runner.run` with an `SQLiteSession` per conversation. Thinklio writes 6 durable steps per interaction \
         (each committed with its events before the next starts); its recovery finishes interactions that were \
         recorded but not started (`submit`, then a new process calls `recover()`).\n\
         - (e) is Thinklio's alone: the peers keep no layered, per-principal knowledge to search the same way, \
         and the suite does not build one for them (see [Retrieval](#retrieval) for the method).\n\
         - Memory is the peak resident size over the size before the interactions, divided by the interactions \
         in flight together.\n\
         - Charts: [harness](bench/harness.svg), [concurrency](bench/concurrency.svg), \
         [memory](bench/memory.svg), [cold start](bench/coldstart.svg).\n"
    );
    out
}

/// A horizontal bar chart as SVG, one bar per system.
///
/// Written by hand rather than with a plotting crate: plotters lays text out
/// with font metrics it must load from a font file at run time, while an SVG
/// leaves text to whoever shows it — five rectangles and their labels need
/// neither.
pub fn bar_chart(title: &str, unit: &str, bars: &[(String, Option<f64>)]) -> String {
    let (width, left, row) = (760.0, 290.0, 34.0);
    let height = 56.0 + row * bars.len() as f64;
    let max = bars
        .iter()
        .filter_map(|(_, v)| *v)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"12\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        esc(title)
    );
    for (i, (name, value)) in bars.iter().enumerate() {
        let y = 44.0 + row * i as f64;
        let _ = writeln!(
            svg,
            "<text x=\"12\" y=\"{:.0}\">{}</text>",
            y + 17.0,
            esc(name)
        );
        match value {
            Some(v) => {
                let w = (width - left - 130.0) * v / max;
                let color = if i == 0 { "#3b5bdb" } else { "#adb5bd" };
                let _ = writeln!(
                    svg,
                    "<rect x=\"{left}\" y=\"{y:.0}\" width=\"{w:.1}\" height=\"24\" fill=\"{color}\"/>\n\
                     <text x=\"{:.1}\" y=\"{:.0}\">{} {}</text>",
                    left + w + 6.0,
                    y + 17.0,
                    format_value(*v),
                    esc(unit)
                );
            }
            None => {
                let _ = writeln!(
                    svg,
                    "<text x=\"{left}\" y=\"{:.0}\" fill=\"#868e96\">not offered</text>",
                    y + 17.0
                );
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The charts, by file name.
pub fn charts(r: &Results) -> Vec<(&'static str, String)> {
    let bars =
        |scenario: &str, f: &dyn Fn(&Outcome) -> Option<f64>| -> Vec<(String, Option<f64>)> {
            SYSTEMS
                .iter()
                .map(|s| {
                    let v = r.get(s, scenario).filter(|o| o.offered).and_then(f);
                    (system_name(s).to_owned(), v)
                })
                .collect()
        };
    vec![
        (
            "harness.svg",
            bar_chart(
                "(a) Harness overhead: interactions per second (higher is better)",
                "/s",
                &bars("harness", &|o| Some(o.per_second)),
            ),
        ),
        (
            "concurrency.svg",
            bar_chart(
                "(b) All in flight, model 50 ms: interactions per second (higher is better)",
                "/s",
                &bars("concurrency", &|o| Some(o.per_second)),
            ),
        ),
        (
            "memory.svg",
            bar_chart(
                "(b) Memory per interaction in flight, KiB (lower is better)",
                "KiB",
                &bars("concurrency", &Outcome::kb_per_interaction),
            ),
        ),
        (
            "coldstart.svg",
            bar_chart(
                "(d) Cold start: process start to first reply, ms (lower is better)",
                "ms",
                &bars("coldstart", &|o| o.first_reply_ms),
            ),
        ),
    ]
}

/// `all`: runs the suite, prints the table, and with `write` rewrites its
/// section of docs/benchmarks.md and the charts in docs/bench/.
pub fn main(plan: &Plan) -> Result<(), BoxError> {
    let results = run(plan)?;
    let table = report(&results);
    println!("{table}");
    if plan.write {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64) -> Outcome {
        Outcome {
            per_second,
            ..Outcome::default()
        }
    }

    #[test]
    fn cells_give_ratios_in_thinklios_favour_whichever_way_is_better() {
        let thinklio = rate(100.0);
        assert_eq!(
            cell("harness", "thinklio", Some(&thinklio), Some(&thinklio)),
            "100/s"
        );
        assert_eq!(
            cell("harness", "langgraph", Some(&rate(25.0)), Some(&thinklio)),
            "25/s (Thinklio 4.0×)"
        );
        let fast = Outcome {
            first_reply_ms: Some(20.0),
            ..Outcome::default()
        };
        let slow = Outcome {
            first_reply_ms: Some(900.0),
            ..Outcome::default()
        };
        assert_eq!(
            cell("coldstart", "langgraph", Some(&slow), Some(&fast)),
            "900 ms (Thinklio 45.0×)"
        );
        let absent = Outcome {
            offered: false,
            ..Outcome::default()
        };
        assert_eq!(
            cell("recovery", "openai-agents", Some(&absent), Some(&thinklio)),
            "not offered"
        );
        assert_eq!(
            cell("recovery", "openai-agents", None, Some(&thinklio)),
            "not measured"
        );
        let concurrent = Outcome {
            n: 1000,
            per_second: 50.0,
            p50_ms: Some(120.0),
            p99_ms: Some(300.0),
            rss_base_kb: Some(10_000),
            rss_peak_kb: Some(40_000),
            ..Outcome::default()
        };
        assert_eq!(
            cell("concurrency", "thinklio", Some(&concurrent), None),
            "50/s; p50 120 ms, p99 300 ms; 30.0 KiB/interaction"
        );
    }

    #[test]
    fn bars_are_proportional_and_missing_ones_say_so() {
        let svg = bar_chart(
            "t <&>",
            "/s",
            &[
                ("A".into(), Some(100.0)),
                ("B".into(), Some(25.0)),
                ("C".into(), None),
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        let widths: Vec<f64> = svg
            .split("<rect x=\"290\"")
            .skip(1)
            .filter_map(|r| r.split("width=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect();
        assert_eq!(widths.len(), 2, "{svg}");
        assert!((widths[0] / widths[1] - 4.0).abs() < 1e-6, "{widths:?}");
        assert!(svg.contains("not offered"));
    }
}
