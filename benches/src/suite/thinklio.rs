//! Thinklio's side of the suite: each scenario, run in this process.

use std::path::Path;
use std::time::{Duration, Instant};

use thinklio_core::{
    ChatModel, ChatRequest, ChatResponse, ChatStream, ModelError, Principal, Runtime,
};
use thinklio_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};

use super::Outcome;
use crate::BoxError;

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

fn timed(n: u64, elapsed: Duration, mut latencies: Vec<Duration>, base_kb: u64) -> Outcome {
    latencies.sort();
    let ms = |p: f64| crate::retrieval::percentile(&latencies, p).as_secs_f64() * 1e3;
    Outcome {
        offered: true,
        n,
        seconds: elapsed.as_secs_f64(),
        per_second: n as f64 / elapsed.as_secs_f64(),
        p50_ms: Some(ms(0.50)),
        p99_ms: Some(ms(0.99)),
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
                latencies.push(t.elapsed());
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
                        return Err::<Duration, BoxError>(
                            format!("unexpected reply {:?}", reply.text).into(),
                        );
                    }
                    Ok(t.elapsed())
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
