//! The memory command line on 10,000 facts, run in process with the same
//! argument parsing as the example: import with the offline embedder, then
//! single and batch search, whose output must be valid JSON and hold only
//! what the user may see.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::io::Write;

use clap::Parser;
use serde_json::Value;
use thinklio_examples::memory::{Args, CliError, run};

/// Runs the command line in process, as `memory ARGS...` would.
async fn memory(args: &[&str]) -> Result<String, CliError> {
    let args = Args::try_parse_from(std::iter::once("memory").chain(args.iter().copied())).unwrap();
    let mut out = Vec::new();
    run(args, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_10000_facts_and_answers_single_and_batch_searches_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("facts.jsonl");
    let mut f = std::fs::File::create(&facts).unwrap();
    let cities = [
        "Lyon", "Porto", "Oslo", "Quito", "Hanoi", "Perth", "Accra", "Lima",
    ];
    for i in 0..10_000 {
        let (layer, owner) = match i % 10 {
            0 => ("account", String::new()),
            1 => ("agent", "assistant".to_owned()),
            2 | 3 => ("team", format!("t{}", i % 7)),
            _ => ("user", format!("u{}", i % 50)),
        };
        let line = serde_json::json!({
            "id": format!("f{i}"),
            "layer": layer,
            "owner": owner,
            "subject": format!("person{}", i % 500),
            "predicate": "lives in",
            "value": format!("{} district {i}", cities[i % 8]),
        });
        writeln!(f, "{line}").unwrap();
    }
    // A free-text fact with no subject or predicate.
    writeln!(f, r#"{{"id": "note", "layer": "user", "owner": "u1", "subject": "", "predicate": "", "value": "u1 keeps the spare key under the blue flowerpot", "valid_at": "2026-01-02T03:04:05Z"}}"#).unwrap();
    drop(f);
    let db = dir.path().join("m.db");
    let db = db.to_str().unwrap();
    memory(&["--db", db, "import", facts.to_str().unwrap()])
        .await
        .unwrap();

    let out = memory(&[
        "--db",
        db,
        "search",
        "--user",
        "u1",
        "--team",
        "t1",
        "--k",
        "5",
        "where is the spare key?",
    ])
    .await
    .unwrap();
    let hits: Value = serde_json::from_str(&out).unwrap();
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0]["id"], "note", "{hits:?}");
    assert_eq!(hits[0]["layer"], "user");
    assert!(
        hits.iter()
            .all(|h| h["score"].is_number() && h["value"].is_string())
    );

    let queries = dir.path().join("q.jsonl");
    let mut q = std::fs::File::create(&queries).unwrap();
    for u in 0..20 {
        writeln!(q, r#"{{"user": "u{u}", "teams": ["t{}"], "question": "who lives in Oslo district?", "k": 10}}"#, u % 7).unwrap();
    }
    drop(q);
    let out = memory(&["--db", db, "search", "--queries", queries.to_str().unwrap()])
        .await
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 20, "one answer per query, in order");
    for (u, line) in lines.iter().enumerate() {
        let hits: Value = serde_json::from_str(line).unwrap();
        for h in hits.as_array().unwrap() {
            let i: usize = h["id"]
                .as_str()
                .unwrap()
                .trim_start_matches('f')
                .parse()
                .unwrap();
            let visible = match i % 10 {
                0 | 1 => true,
                2 | 3 => i % 7 == u % 7,
                _ => i % 50 == u,
            };
            assert!(visible, "query {u} got f{i}, which it may not see");
        }
    }
}

#[tokio::test]
async fn bad_input_is_a_clear_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("bad.jsonl");
    std::fs::write(&facts, "{\"id\": \"a\", \"layer\": \"user\", \"owner\": \"u1\", \"value\": \"ok\"}\n{\"id\": \"b\", \"layer\": \"planet\", \"value\": \"x\"}\n").unwrap();
    let db = dir.path().join("m.db");
    let err = memory(&[
        "--db",
        db.to_str().unwrap(),
        "import",
        facts.to_str().unwrap(),
    ])
    .await
    .unwrap_err()
    .to_string();
    // Nothing of the file was imported: the first line was good, the second not.
    let listed = memory(&["--db", db.to_str().unwrap(), "search", "--user", "u1", "ok"])
        .await
        .unwrap();
    assert_eq!(listed.trim(), "[]");
    assert!(
        err.contains("bad.jsonl:2") && err.contains("planet"),
        "{err}"
    );
}
