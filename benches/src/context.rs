//! `context`: one long session through the harness, three ways, and the
//! tokens each `think` step sends, turn by turn.
//!
//! A scripted model answers at realistic, varying lengths (a user says 5 to
//! 120 words, the assistant answers with 20 to 400), deterministically, so
//! the three runs see the same conversation:
//!
//! - *full history*: every earlier turn is shown (no window, no budget);
//! - *fixed window*: the last 20 turns, whatever their size;
//! - *budget and summaries*: the last 20 turns that fit an 8,000-token budget,
//!   after a chain of summaries of the older ones (written by the queue's
//!   summariser as the session goes on).
//!
//! Tokens are counted as the harness counts them (`EstimatedTokens`).

use std::fmt::Write as _;
use std::sync::Arc;

use thinklio_core::context::{EstimatedTokens, TokenCounter, message_tokens};
use thinklio_core::{AgentDefinition, ChatRequest, Principal, Runtime, SUMMARY_PROMPT};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

use crate::BoxError;

/// The budget of the third run.
pub const BUDGET: u32 = 8_000;

/// Tokens per think, per turn, of each run.
pub struct Figures {
    /// Turns run.
    pub turns: usize,
    /// Full history.
    pub full: Vec<usize>,
    /// The last 20 turns.
    pub window: Vec<usize>,
    /// Budget and summaries.
    pub summarised: Vec<usize>,
    /// Summaries written in the third run.
    pub summaries: usize,
}

/// A deterministic number in `lo..hi` from `seed`.
fn spread(seed: u64, lo: usize, hi: usize) -> usize {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    lo + (x as usize) % (hi - lo)
}

fn words(n: usize, what: &str) -> String {
    (0..n).map(|i| format!("{what}{} ", i % 13)).collect()
}

/// The user's message of turn `turn`.
fn message(turn: usize) -> String {
    format!("Turn {turn}: {}", words(spread(turn as u64, 5, 120), "ask"))
}

/// The model: answers a message at a length of its own; writes a summary
/// of about 200 words when asked to.
fn model() -> ScriptedModel {
    ScriptedModel::responder(|r: &ChatRequest| {
        if r.messages[0].content == SUMMARY_PROMPT {
            return ScriptedReply::text(words(200, "gist"));
        }
        let last = &r
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let seed = last.len() as u64 * 31 + 7;
        ScriptedReply::text(words(spread(seed, 20, 400), "say"))
    })
    .without_recording()
}

/// Records the tokens of each think request.
struct Counting {
    inner: ScriptedModel,
    tokens: std::sync::Mutex<Vec<usize>>,
}

#[async_trait::async_trait]
impl thinklio_core::ChatModel for Counting {
    async fn chat(
        &self,
        request: &ChatRequest,
    ) -> Result<thinklio_core::ChatResponse, thinklio_core::ModelError> {
        if request.messages[0].content != SUMMARY_PROMPT {
            let counter = EstimatedTokens;
            let n: usize = request
                .messages
                .iter()
                .map(|m| message_tokens(&counter, &request.model, m))
                .sum::<usize>()
                + counter.count(
                    &request.model,
                    &serde_json::to_string(&request.tools).unwrap_or_default(),
                );
            self.tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(n);
        }
        self.inner.chat(request).await
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
    ) -> Result<thinklio_core::ChatStream, thinklio_core::ModelError> {
        self.inner.chat_stream(request).await
    }
}

async fn session(agent: AgentDefinition, turns: usize) -> Result<(Vec<usize>, usize), BoxError> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("context.db")).await?;
    let model = Arc::new(Counting {
        inner: model(),
        tokens: Default::default(),
    });
    let rt = Runtime::builder()
        .store(store.clone())
        .model_arc(model.clone())
        // A window nothing fills: only the agent's settings limit what is shown.
        .context_window("bench", 100_000_000)
        .agent(agent)
        .build()?;
    let s = rt
        .open_session(Principal::local(), "assistant", "bench", None)
        .await?;
    let mut summaries = 0;
    for turn in 1..=turns {
        rt.send(s.id, message(turn)).await?;
        summaries += rt.run_due_tasks().await?.completed;
    }
    let tokens = model
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok((tokens, summaries))
}

/// Runs the three sessions of `turns` turns.
pub async fn run(turns: usize) -> Result<Figures, BoxError> {
    let base = || {
        AgentDefinition::new("assistant", "bench")
            .system_prompt("You are a helpful assistant.")
            .summarize_after(0)
    };
    let (full, _) = session(base().history_turns(u32::MAX), turns).await?;
    let (window, _) = session(base().history_turns(20), turns).await?;
    let (summarised, summaries) = session(
        base()
            .history_turns(20)
            .context_budget(BUDGET)
            .summarize_after(8),
        turns,
    )
    .await?;
    Ok(Figures {
        turns,
        full,
        window,
        summarised,
        summaries,
    })
}

fn at(v: &[usize], turn: usize) -> String {
    v.get(turn - 1).map_or("–".to_owned(), ToString::to_string)
}

/// The table of tokens per think at chosen turns, and the largest.
pub fn report(f: &Figures) -> String {
    let mut out = String::from(
        "| turn | full history | last 20 turns | budget and summaries |\n| ---: | ---: | ---: | ---: |\n",
    );
    for turn in [1, 10, 25, 50, 100, 200, 300, 400, 500] {
        if turn > f.turns {
            continue;
        }
        let _ = writeln!(
            out,
            "| {turn} | {} | {} | {} |",
            at(&f.full, turn),
            at(&f.window, turn),
            at(&f.summarised, turn)
        );
    }
    let max = |v: &[usize]| v.iter().max().copied().unwrap_or(0);
    let late = |v: &[usize]| {
        let tail = &v[v.len().min(50)..];
        (
            tail.iter().min().copied().unwrap_or(0),
            tail.iter().max().copied().unwrap_or(0),
        )
    };
    let (lo, hi) = late(&f.summarised);
    let (wlo, whi) = late(&f.window);
    let _ = writeln!(
        out,
        "| largest | {} | {} | {} |\n\n\
         After turn 50, a think of the budgeted run sends {lo}–{hi} tokens (the budget is {BUDGET}); \
         the fixed window's swing with its turns' sizes ({wlo}–{whi}); full history grows with every \
         turn. The budgeted run wrote {} summaries.",
        max(&f.full),
        max(&f.window),
        max(&f.summarised),
        f.summaries
    );
    out
}

/// A line chart of tokens per think against the turn, one line per run.
pub fn chart(f: &Figures) -> String {
    let (width, height, left, bottom, top) = (760.0, 360.0, 70.0, 40.0, 30.0);
    let max = f
        .full
        .iter()
        .chain(&f.window)
        .chain(&f.summarised)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let plot_w = width - left - 20.0;
    let plot_h = height - top - bottom;
    let x = |i: usize| left + plot_w * i as f64 / (f.turns.max(2) - 1) as f64;
    let y = |v: usize| top + plot_h * (1.0 - v as f64 / max);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">Tokens sent per think, by turn ({} turns)</text>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"#888\"/>\n\
         <text x=\"4\" y=\"{}\">{}</text>\n<text x=\"4\" y=\"{}\">0</text>\n",
        f.turns,
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h,
        top + 4.0,
        max as usize,
        top + plot_h
    );
    for (series, colour, label, row) in [
        (&f.full, "#d62728", "full history", 0.0),
        (&f.window, "#ff7f0e", "last 20 turns", 1.0),
        (&f.summarised, "#1f77b4", "budget and summaries", 2.0),
    ] {
        let points: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{label}</text>",
            points.join(" "),
            left + 10.0,
            top + 16.0 + 16.0 * row
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_three_lines_and_the_report_every_turn_asked() {
        let f = Figures {
            turns: 3,
            full: vec![10, 20, 30],
            window: vec![10, 20, 25],
            summarised: vec![10, 15, 15],
            summaries: 1,
        };
        let svg = chart(&f);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.trim_end().ends_with("</svg>"));
        let table = report(&f);
        assert!(table.contains("| 1 | 10 | 10 | 10 |"));
        assert!(table.contains("| largest | 30 | 25 | 15 |"));
    }
}
