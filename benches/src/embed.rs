//! Local embeddings beside their reference: all-MiniLM-L6-v2 in Thinklio
//! (`thinklio_llm::MiniLm`, candle, in-process) and through
//! sentence-transformers on PyTorch (`benches/peers/embed.py`), on the same
//! sentences in one run: sentences per second in batches, and the latency
//! of one query embedded alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use thinklio_core::Embedder;

use crate::BoxError;
use crate::retrieval::{generate, percentile, text};

/// What one run measures.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many sentences are embedded in batches.
    pub sentences: usize,
    /// How many of them are then embedded one at a time.
    pub queries: usize,
    /// The model's directory (`scripts/fetch-minilm.sh`).
    pub model: PathBuf,
    /// The reference's Python (`benches/peers/setup-embed.sh`), if measured.
    pub reference: Option<PathBuf>,
    /// Writes the table to `docs/benchmarks.md`.
    pub write: bool,
}

/// One embedder's figures.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Sentences per second, in batches of 32.
    pub batch_per_s: f64,
    /// One query alone: median.
    pub query_p50: Duration,
    /// One query alone: 99th percentile.
    pub query_p99: Duration,
}

/// Sentences of mixed length, as chats and imports hold them: one to four
/// generated facts joined into one sentence.
pub fn sentences(n: usize) -> Vec<String> {
    let facts = generate(n * 3);
    let mut rng = fastrand::Rng::with_seed(0x000e_3bed);
    let mut at = 0;
    (0..n)
        .map(|_| {
            let k = rng.usize(1..=4);
            let parts: Vec<String> = facts[at..at + k].iter().map(text).collect();
            at = (at + k) % (facts.len() - 4);
            parts.join(", and ")
        })
        .collect()
}

/// Thinklio's MiniLM on `texts`.
pub async fn thinklio(model: &Path, texts: &[String], queries: usize) -> Result<Figures, BoxError> {
    let embedder = thinklio_llm::MiniLm::load(model)?;
    embedder.embed(&texts[..texts.len().min(64)]).await?;
    let start = Instant::now();
    embedder.embed(texts).await?;
    let batch = start.elapsed();
    let mut times = Vec::with_capacity(queries);
    for t in texts.iter().take(queries) {
        let start = Instant::now();
        embedder.embed(std::slice::from_ref(t)).await?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(Figures {
        batch_per_s: texts.len() as f64 / batch.as_secs_f64(),
        query_p50: percentile(&times, 0.50),
        query_p99: percentile(&times, 0.99),
    })
}

/// sentence-transformers on PyTorch on `texts`, through `python`.
pub fn reference(python: &Path, texts: &[String], queries: usize) -> Result<Figures, BoxError> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("sentences.txt");
    std::fs::write(&file, texts.join("\n"))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/embed.py");
    let out = Command::new(python)
        .arg(script)
        .arg("--texts")
        .arg(&file)
        .arg("--queries")
        .arg(queries.to_string())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "the reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let line: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ms = |k: &str| Duration::from_secs_f64(line[k].as_f64().unwrap_or(f64::NAN) / 1000.0);
    Ok(Figures {
        batch_per_s: line["batch_per_s"].as_f64().unwrap_or(f64::NAN),
        query_p50: ms("query_p50_ms"),
        query_p99: ms("query_p99_ms"),
    })
}

/// The table: Thinklio, the reference, and their ratio.
pub fn report(ours: &Figures, theirs: Option<&Figures>) -> String {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let mut table = String::from(
        "| | batches of 32 | one query, p50 | one query, p99 |\n| --- | --- | --- | --- |\n",
    );
    table.push_str(&format!(
        "| Thinklio (candle) | {:.0} sentences/s | {} | {} |\n",
        ours.batch_per_s,
        ms(ours.query_p50),
        ms(ours.query_p99)
    ));
    if let Some(t) = theirs {
        table.push_str(&format!(
            "| sentence-transformers (PyTorch) | {:.0} sentences/s | {} | {} |\n",
            t.batch_per_s,
            ms(t.query_p50),
            ms(t.query_p99)
        ));
        table.push_str(&format!(
            "| Thinklio ÷ PyTorch | {:.2}× throughput | {:.2}× latency | {:.2}× latency |\n",
            ours.batch_per_s / t.batch_per_s,
            ours.query_p50.as_secs_f64() / t.query_p50.as_secs_f64(),
            ours.query_p99.as_secs_f64() / t.query_p99.as_secs_f64(),
        ));
    }
    table
}
