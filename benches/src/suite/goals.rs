//! What the suite measures of Thinklio alone, beside the peers: the work
//! each interaction asks of its store (round trips and commits, SQLite and
//! PostgreSQL, with the raw baseline of committed writes), retrieval over
//! a large layer, and the table of performance goals each run is judged by.

use std::fmt::Write as _;

use crate::BoxError;
use crate::harness::{Measure, STEPS_PER_INTERACTION};

use super::{Plan, Results};

/// The store's work per interaction, measured in this process.
#[derive(Debug)]
pub struct StoreWork {
    pub interactions: u64,
    /// Bare rusqlite: one committed INSERT and one committed UPDATE per step.
    pub raw: Measure,
    /// One interaction at a time, then 16 sessions at once, on a SQLite file.
    pub sqlite_one: Measure,
    pub sqlite_many: Measure,
    /// 16 sessions at once on PostgreSQL, one worker.
    pub postgres: Measure,
}

/// Runs the store-work measurements.
pub async fn store_work(plan: &Plan) -> Result<StoreWork, BoxError> {
    let n = if plan.quick { 120 } else { 2_000 };
    let dir = tempfile::tempdir()?;
    let raw = crate::harness::raw_baseline(&dir.path().join("raw.db"), n * STEPS_PER_INTERACTION)?;
    let sqlite_one = crate::harness::thinklio(&dir.path().join("one.db"), n, 1).await?;
    let sqlite_many = crate::harness::thinklio(&dir.path().join("many.db"), n, 16).await?;
    let postgres = crate::stores::postgres_harness(1, n, 16).await?;
    Ok(StoreWork {
        interactions: n,
        raw,
        sqlite_one,
        sqlite_many,
        postgres,
    })
}

/// Round trips and commits per step, when counted.
fn per_step(m: &Measure) -> Option<(f64, f64)> {
    let c = m.store?;
    let steps = m.steps.max(1) as f64;
    Some((c.round_trips as f64 / steps, c.commits as f64 / steps))
}

/// The store-work section.
pub fn work_report(w: &StoreWork) -> String {
    let mut out = String::from("## Store work per interaction\n\n");
    let _ = writeln!(
        out,
        "{} interactions of the harness scenario (6 durable steps each, instant model), in this run; \
         the raw baseline does the same number of steps as bare rusqlite (a committed INSERT and a committed \
         UPDATE per step). A round trip is a job sent to SQLite's connection thread, or a statement \
         PostgreSQL ran (`pg_stat_statements`); commits are SQLite's commit hook and PostgreSQL's \
         `xact_commit`.\n",
        w.interactions
    );
    out.push_str("| run | steps/s | µs/step | vs raw | round trips / interaction | commits / interaction |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    let raw_us = w.raw.micros_per_step();
    for (name, m) in [
        ("raw rusqlite, every write committed", &w.raw),
        ("SQLite, one interaction at a time", &w.sqlite_one),
        ("SQLite, 16 sessions", &w.sqlite_many),
        ("PostgreSQL, 16 sessions, 1 worker", &w.postgres),
    ] {
        let (rt, commits) = if std::ptr::eq(m, &w.raw) {
            ("—".to_owned(), "12.0".to_owned())
        } else {
            m.per_interaction()
        };
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.1} | {:.2}× | {rt} | {commits} |",
            m.steps_per_second(),
            m.micros_per_step(),
            m.micros_per_step() / raw_us
        );
    }
    out
}

/// One goal: what is measured, the goal, this run's figure, and whether it holds.
struct Goal {
    measure: &'static str,
    goal: &'static str,
    now: String,
    met: Option<bool>,
}

fn ratio(results: &Results, key: &str) -> Option<f64> {
    let t = results.get("thinklio", key)?;
    let l = results.get("langgraph", key)?;
    (l.offered && l.per_second > 0.0).then(|| t.per_second / l.per_second)
}

/// The goals of the performance plan, judged on this run.
pub fn goals(r: &Results) -> String {
    let mut goals = Vec::new();
    // A figure of this run against its goal, `at_least` or at most.
    let mut push = |measure, goal, value: Option<f64>, unit: &str, bound: f64, at_least: bool| {
        goals.push(Goal {
            measure,
            goal,
            now: value.map_or("not measured".into(), |x| format!("{x:.1}{unit}")),
            met: value.map(|x| if at_least { x >= bound } else { x <= bound }),
        });
    };
    push(
        "10,000 in flight, 50 ms model: interactions/s vs LangGraph",
        "≥ 30×",
        ratio(r, "concurrency"),
        "×",
        30.0,
        true,
    );
    push(
        "resident memory per interaction in flight",
        "≤ 10 KiB",
        r.get("thinklio", "concurrency")
            .and_then(super::Outcome::kb_per_interaction),
        " KiB",
        10.0,
        false,
    );
    push(
        "recovery of 10,000: interactions/s vs LangGraph",
        "≥ 20×",
        ratio(r, "recovery"),
        "×",
        20.0,
        true,
    );
    push(
        "one at a time: interactions/s vs LangGraph",
        "≥ 10×",
        ratio(r, "harness"),
        "×",
        10.0,
        true,
    );
    if let Some(w) = &r.work {
        let overhead = w.sqlite_one.micros_per_step() / w.raw.micros_per_step();
        goals.push(Goal {
            measure: "one at a time: harness time per step vs raw committed writes",
            goal: "≤ 2×",
            now: format!("{overhead:.2}×"),
            met: Some(overhead <= 2.0),
        });
        let trips = per_step(&w.postgres).map(|(t, _)| t);
        goals.push(Goal {
            measure: "PostgreSQL: round trips (statements) per step",
            goal: "≤ 2",
            now: trips.map_or("not counted (pg_stat_statements missing)".into(), |t| {
                format!("{t:.1}")
            }),
            met: trips.map(|t| t <= 2.0),
        });
        let pg = w.postgres.steps_per_second() / w.sqlite_many.steps_per_second();
        goals.push(Goal {
            measure: "PostgreSQL: steps/s vs SQLite (16 sessions)",
            goal: "≥ 0.6×",
            now: format!("{pg:.2}×"),
            met: Some(pg >= 0.6),
        });
    }
    if let Some(layer) = &r.layer {
        for row in &layer.rows {
            goals.push(Goal {
                measure: if row.store.starts_with("SQLite") {
                    "retrieval, one principal sees 100,000 facts, SQLite: faster than exact; recall@10"
                } else {
                    "retrieval, one principal sees 100,000 facts, PostgreSQL: faster than exact; recall@10"
                },
                goal: "≥ 5×; ≥ 0.95",
                now: format!(
                    "{:.1}×; {:.3} ({} facts; the question's embedding p50 {:.1} ms)",
                    row.speedup(),
                    row.recall,
                    layer.facts,
                    layer.embed.0.as_secs_f64() * 1e3
                ),
                met: Some(row.speedup() >= 5.0 && row.recall >= 0.95),
            });
        }
    }
    goals.push(Goal {
        measure: "clone to first reply: `cargo run --example quickstart` on an empty target",
        goal: "only what the quickstart needs",
        now: "measured outside the suite (`scripts/quickstart-build.sh`)".into(),
        met: None,
    });
    let mut out = String::from("## Performance goals\n\n");
    let _ = writeln!(
        out,
        "Judged on the run above ({}), every ratio from this one run.\n",
        r.plan
    );
    out.push_str("| measure | goal | this run | met |\n| --- | --- | --- | --- |\n");
    for g in goals {
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "—",
        };
        let _ = writeln!(out, "| {} | {} | {} | {met} |", g.measure, g.goal, g.now);
    }
    out
}
