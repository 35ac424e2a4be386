//! `cargo run --example quickstart` as a newcomer runs it, with no model
//! key: the offline model proposes adding to the todo list, the chat asks
//! y/n, and only what was approved is added.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

#[path = "../../tests/example_bin/mod.rs"]
mod example_bin;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The quickstart's binary, built as `cargo run --example quickstart`
/// builds it (`scripts/test.sh` builds it before the tests start).
fn binary() -> PathBuf {
    example_bin::package_example("thinklio-quickstart", "quickstart")
}

/// Runs the quickstart with `input` on stdin; its stdout.
fn quickstart(args: &[&str], input: &str) -> String {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("THINKLIO_MODEL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_chat_asks_before_adding_to_the_todo_list() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let db = db.to_str().unwrap();
    let listed = quickstart(&["--db", db, "--capabilities"], "");
    let manifests: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(
        manifests
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "todo_add"),
        "{listed}"
    );

    let chat = quickstart(
        &["--db", db],
        "add milk to my list\ny\nadd eggs to my list\nn\n\n",
    );
    assert!(
        chat.contains(r#"Run `todo_add` with {"text":"milk"}? [y/n]"#),
        "{chat}"
    );
    assert!(
        chat.contains(r#"Added to your todo list: {"done":false,"number":1,"text":"milk"}"#),
        "{chat}"
    );
    assert!(chat.contains("approval.rejected"), "{chat}");
    // Only the approved item is on the list.
    let list = quickstart(&["--db", db, "--call", "todo_list", "{}"], "");
    assert!(list.contains("milk") && !list.contains("eggs"), "{list}");
}
