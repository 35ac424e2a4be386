//! The suite's output: the Markdown table and the SVG charts.

use std::fmt::Write as _;

use super::{Outcome, Results, SCENARIOS, SYSTEMS};

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
