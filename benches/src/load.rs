//! The load test of the HTTP host: the `http-server` example as a user runs
//! it (its own process, a SQLite file, the offline model, so the model costs
//! nothing and the figures are the host's), driven on loopback by bounded
//! concurrent clients at a fixed arrival rate for a soak of several minutes.
//!
//! The expected load it is ten times: a deployment of a few thousand
//! active users at its peak hour, 10 requests a second — 7 messages
//! answered as JSON, 2 answered as server-sent event streams, 1 job
//! dispatched. Arrivals are scheduled open-loop, and each latency is
//! measured from the moment its request was due, so a host that falls
//! behind shows it in p99 instead of slowing the clients down.
//! The server's resident memory is read from `/proc` every second.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Requests a second the load test calls expected.
pub const EXPECTED_RATE: f64 = 10.0;

pub struct Options {
    /// Times the expected rate.
    pub factor: f64,
    /// Length of the soak.
    pub duration: Duration,
    /// Clients sending at once (at most).
    pub clients: usize,
    /// Conversations the messages are spread over.
    pub sessions: usize,
    /// Accounts (tenants) the conversations belong to, each with its key:
    /// a host's per-account rate limit holds each of them.
    pub accounts: usize,
    pub release: bool,
    pub write: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            factor: 10.0,
            duration: Duration::from_secs(300),
            clients: 64,
            sessions: 200,
            accounts: 20,
            release: true,
            write: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Message,
    Stream,
    Job,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Message => "message (JSON)",
            Kind::Stream => "message (SSE stream)",
            Kind::Job => "job dispatch",
        }
    }

    /// The i-th request's kind: 7 messages, 2 streams, 1 job in every 10.
    fn of(i: u64) -> Kind {
        match i % 10 {
            3 | 7 => Kind::Stream,
            9 => Kind::Job,
            _ => Kind::Message,
        }
    }
}

#[derive(Debug, Default)]
pub struct Latencies {
    pub ok: Vec<Duration>,
    pub errors: u64,
}

#[derive(Debug)]
pub struct Results {
    pub rate: f64,
    pub duration: Duration,
    pub sent: u64,
    pub by_kind: BTreeMap<Kind, Latencies>,
    /// Resident memory of the server (KiB): after the first 10 s, at the
    /// end, and the most seen.
    pub rss_warm: u64,
    pub rss_end: u64,
    pub rss_max: u64,
    pub jobs_resolved: u64,
    pub jobs_dispatched: u64,
    pub first_error: Option<String>,
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(release: bool) -> Result<PathBuf, BoxError> {
    // Built exactly as the test script builds it, so the two builds agree.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "-p",
        "thinklio-examples",
        "--example",
        "http-server",
    ]);
    if release {
        build.arg("--release");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if !build.current_dir(&root).status()?.success() {
        return Err("cannot build the http-server example".into());
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("examples/http-server"))
}

/// Makes a new account with an admin key, as an operator does
/// (`http-server create-key`), and returns the key.
fn create_key(binary: &Path, db: &Path) -> Result<String, BoxError> {
    let out = Command::new(binary)
        .args(["--db", db.to_str().ok_or("a path that is not UTF-8")?])
        .args(["create-key", "--label", "load"])
        .env("RUST_LOG", "error")
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "create-key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("key"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .ok_or_else(|| "create-key printed no key".into())
}

fn start(binary: &Path, db: &Path) -> Result<Server, BoxError> {
    let child = Command::new(binary)
        .args(["--db", db.to_str().ok_or("a path that is not UTF-8")?])
        .args(["--addr", "127.0.0.1:0", "--requests-per-minute", "10000000"])
        .env_remove("THINKLIO_MODEL")
        .env("RUST_LOG", "error")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut server = Server {
        child,
        base: String::new(),
    };
    let stderr = server.child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().ok_or("the server exited")??;
        if let Some(rest) = line.strip_prefix("Thinklio listens on ") {
            server.base = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        if line.starts_with("web chat: ") {
            if server.base.is_empty() {
                return Err("the server printed no address".into());
            }
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return Ok(server);
        }
    }
}

/// Resident memory of `pid` in KiB.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

async fn request(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    kind: Kind,
    session: &str,
    n: u64,
) -> Result<Option<String>, String> {
    let auth = format!("Bearer {key}");
    let response = match kind {
        Kind::Message | Kind::Stream => {
            let mut url = format!("{base}/v1/sessions/{session}/messages");
            if kind == Kind::Stream {
                url.push_str("?stream=true");
            }
            http.post(url)
                .header("authorization", &auth)
                .json(&json!({ "text": format!("what is {n} + 3?") }))
                .send()
                .await
        }
        Kind::Job => {
            http.post(format!("{base}/v1/jobs"))
                .header("authorization", &auth)
                .json(&json!({
                    "user": format!("user-{}", n % 50),
                    "capability": "word_count",
                    "input": { "text": "count these five words" },
                }))
                .send()
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    match kind {
        Kind::Message => {
            let reply: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            if reply["text"].as_str().is_none_or(str::is_empty) {
                return Err(format!("no reply text: {body}"));
            }
            Ok(None)
        }
        Kind::Stream => {
            if !body.contains("event: reply") {
                return Err(format!("the stream ended without a reply: {body}"));
            }
            Ok(None)
        }
        Kind::Job => {
            let job: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            Ok(job["job"]["id"].as_str().map(str::to_owned))
        }
    }
}

pub async fn run(options: &Options) -> Result<Results, BoxError> {
    let binary = tokio::task::spawn_blocking({
        let release = options.release;
        move || binary(release)
    })
    .await??;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("load.db");
    let mut keys = Vec::new();
    for _ in 0..options.accounts.max(1) {
        keys.push(create_key(&binary, &db)?);
    }
    let server = start(&binary, &db)?;
    let pid = server.child.id();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.clients)
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut sessions = Vec::new();
    for s in 0..options.sessions {
        let key = keys[s % keys.len()].clone();
        let response: Value = http
            .post(format!("{}/v1/sessions", server.base))
            .header("authorization", format!("Bearer {key}"))
            .json(&json!({ "user": format!("user-{}", s % 50), "conversation": format!("c{s}") }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = response["id"].as_str().ok_or("a session without an id")?;
        sessions.push((key, id.to_owned()));
    }
    // Each session is held by one client at a time (a conversation's
    // messages go in order, as a person sends them).
    let sessions: Arc<Vec<Mutex<(String, String)>>> =
        Arc::new(sessions.into_iter().map(Mutex::new).collect());

    let rate = EXPECTED_RATE * options.factor;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * options.duration.as_secs_f64()) as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<(u64, Instant)>(total.max(1) as usize);
    let rx = Arc::new(Mutex::new(rx));
    type Collected = (
        BTreeMap<Kind, Latencies>,
        Vec<(String, String)>,
        Option<String>,
    );
    let results: Arc<std::sync::Mutex<Collected>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..options.clients {
        let (rx, http, results, sessions) =
            (rx.clone(), http.clone(), results.clone(), sessions.clone());
        let base = server.base.clone();
        clients.push(tokio::spawn(async move {
            loop {
                let Some((n, due)) = rx.lock().await.recv().await else {
                    return;
                };
                let kind = Kind::of(n);
                let outcome = {
                    let session = sessions[(n as usize) % sessions.len()].lock().await;
                    let (key, id) = &*session;
                    request(&http, &base, key, kind, id, n)
                        .await
                        .map(|job| job.map(|j| (key.clone(), j)))
                };
                let took = due.elapsed();
                let mut r = results.lock().unwrap_or_else(|e| e.into_inner());
                let latencies = r.0.entry(kind).or_default();
                match outcome {
                    Ok(job) => {
                        latencies.ok.push(took);
                        r.1.extend(job);
                    }
                    Err(e) => {
                        latencies.errors += 1;
                        r.2.get_or_insert(e);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let (mut rss_warm, mut rss_max) = (0, 0);
    let mut next_sample = started;
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        if tx.try_send((n, due)).is_err() {
            return Err("the request queue overflowed".into());
        }
        if Instant::now() >= next_sample {
            let now = rss(pid);
            rss_max = rss_max.max(now);
            if rss_warm == 0 && started.elapsed() >= Duration::from_secs(10) {
                rss_warm = now;
            }
            next_sample += Duration::from_secs(1);
        }
    }
    drop(tx);
    for client in clients {
        client.await?;
    }
    let duration = started.elapsed();
    let rss_end = rss(pid);
    rss_max = rss_max.max(rss_end);
    if rss_warm == 0 {
        rss_warm = rss_end;
    }
    let (by_kind, jobs, first_error) =
        std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    // Every dispatched job resolves (the host's job worker runs them).
    let mut jobs_resolved = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for (key, id) in &jobs {
        loop {
            let view: Value = http
                .get(format!("{}/v1/jobs/{id}", server.base))
                .header("authorization", format!("Bearer {key}"))
                .send()
                .await?
                .json()
                .await?;
            if view["job"]["state"] == "resolved" {
                jobs_resolved += 1;
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Results {
        rate,
        duration,
        sent: total,
        by_kind,
        rss_warm,
        rss_end,
        rss_max,
        jobs_resolved,
        jobs_dispatched: jobs.len() as u64,
        first_error,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn report(options: &Options, r: &Results) -> String {
    let mut out = format!(
        "## Load test of the HTTP host\n\n\
         The `http-server` example in its own process (SQLite file, the offline model: the \
         figures are the host's, not a provider's) on loopback, at {factor}× an expected \
         {EXPECTED_RATE} requests/s (7 messages answered as JSON, 2 as server-sent event \
         streams, 1 job dispatched, in every 10): {rate:.0} requests/s scheduled open-loop for \
         {secs:.0} s by at most {clients} clients over {sessions} conversations; each latency \
         counts from when its request was due; {accounts} accounts, each with its own key (the \
         host's per-account rate limit, 1,800 requests a minute, holds each). Each message is a full interaction (context, \
         think, act, observe, think, respond, every step committed). Machine: {machine}.\n\n\
         | request | sent | errors | p50 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
        factor = options.factor,
        rate = r.rate,
        secs = r.duration.as_secs_f64(),
        clients = options.clients,
        sessions = options.sessions,
        accounts = options.accounts,
        machine = crate::harness::machine(),
    );
    for (kind, l) in &r.by_kind {
        let mut sorted = l.ok.clone();
        sorted.sort();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            kind.name(),
            l.ok.len() as u64 + l.errors,
            l.errors,
            ms(percentile(&sorted, 0.5)),
            ms(percentile(&sorted, 0.99)),
            ms(sorted.last().copied().unwrap_or_default()),
        );
    }
    let _ = write!(
        out,
        "\nAchieved {achieved:.1} requests/s. Jobs dispatched {d}, resolved {j}. Server resident \
         memory: {warm:.1} MiB after 10 s, {end:.1} MiB at the end, {max:.1} MiB at most.\n\n\
         `cargo run --release -p thinklio-benches -- load --write`\n\n",
        achieved = r.sent as f64 / r.duration.as_secs_f64(),
        d = r.jobs_dispatched,
        j = r.jobs_resolved,
        warm = r.rss_warm as f64 / 1024.0,
        end = r.rss_end as f64 / 1024.0,
        max = r.rss_max as f64 / 1024.0,
    );
    if let Some(e) = &r.first_error {
        let _ = writeln!(out, "First error: `{e}`\n");
    }
    out
}

pub fn main(options: &Options) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(run(options))?;
    let text = report(options, &results);
    println!("{text}");
    if options.write {
        crate::docs::write_section("load", &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short run against the debug build, so that the load test cannot rot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_load_test_answers_every_request() {
        let options = Options {
            factor: 1.0,
            duration: Duration::from_secs(3),
            clients: 8,
            sessions: 10,
            accounts: 2,
            release: false,
            write: false,
        };
        let r = run(&options).await.unwrap();
        let errors: u64 = r.by_kind.values().map(|l| l.errors).sum();
        assert_eq!(errors, 0, "{:?}", r.first_error);
        assert_eq!(
            r.by_kind.values().map(|l| l.ok.len() as u64).sum::<u64>(),
            r.sent
        );
        assert_eq!(r.jobs_resolved, r.jobs_dispatched);
        assert!(r.jobs_dispatched > 0 && r.rss_end > 0);
        assert!(report(&options, &r).contains("| job dispatch |"));
    }
}
