//! The built-in capabilities through the real harness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::Arc;

use serde_json::{Value, json};
use thinklio_capabilities::{OutboundPolicy, builtin};
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A model that makes each call of each message in turn, then says "done".
fn script(messages: &[&[(&str, Value)]]) -> ScriptedModel {
    let mut replies = Vec::new();
    for calls in messages {
        for (i, (name, args)) in calls.iter().enumerate() {
            replies.push(ScriptedReply::tool_call(
                format!("c{i}"),
                *name,
                args.to_string(),
            ));
        }
        replies.push(ScriptedReply::text("done"));
    }
    ScriptedModel::new(replies)
}

async fn runtime(dir: &tempfile::TempDir, model: ScriptedModel) -> Runtime {
    // The test's pages are served on this machine: allowed by name.
    let local = OutboundPolicy::public_only().allow_host("127.0.0.1");
    runtime_with(dir, model, builtin::web_fetch_with(local)).await
}

async fn runtime_with(
    dir: &tempfile::TempDir,
    model: ScriptedModel,
    web_fetch: FunctionCapability,
) -> Runtime {
    let store = SqliteStore::open(dir.path().join("b.db")).await.unwrap();
    let todo: Arc<dyn TodoStore> = Arc::new(store.clone());
    let mut builder = Runtime::builder()
        .store(store)
        .model(model)
        .capability(builtin::clock())
        .capability(web_fetch)
        .agent(AgentDefinition::new("a", "m").capabilities([
            "clock",
            "web_fetch",
            "todo_add",
            "todo_list",
            "todo_done",
        ]));
    for c in builtin::todo_list(todo) {
        builder = builder.capability(c);
    }
    builder.build().unwrap()
}

/// Sends one message for `principal`; returns each call's result or error code.
async fn acts(rt: &Runtime, principal: Principal) -> Vec<Result<Value, String>> {
    let session = rt.open_session(principal, "a", "t", None).await.unwrap();
    let reply = rt.send(session.id, "go").await.unwrap();
    let steps = rt
        .sessions()
        .steps(principal, reply.interaction_id)
        .await
        .unwrap();
    steps
        .iter()
        .filter(|s| s.kind == StepKind::Act)
        .map(|s| match &s.error {
            None => Ok(s.output.as_ref().unwrap()["result"].clone()),
            Some(e) => Err(format!("{}: {}", e.code, e.message)),
        })
        .collect()
}

#[tokio::test]
async fn the_todo_list_is_durable_and_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let model = script(&[
        &[
            ("todo_add", json!({ "text": "buy milk" })),
            ("todo_add", json!({ "text": "call mum" })),
            ("todo_done", json!({ "number": 1 })),
            ("todo_list", json!({})),
        ],
        &[("todo_list", json!({ "include_done": true }))],
    ]);
    let rt = runtime(&dir, model).await;
    let me = Principal::local();
    let got = acts(&rt, me).await;
    assert_eq!(
        got[3],
        Ok(json!([{ "number": 2, "text": "call mum", "done": false }]))
    );
    let someone_else = Principal::new(AccountId::new(), UserId::new());
    let theirs = acts(&rt, someone_else).await;
    assert_eq!(
        theirs[0],
        Ok(json!([])),
        "another user sees none of my items"
    );
    // Todos are an optional part of a store, read from the store itself.
    let store = SqliteStore::open(dir.path().join("b.db")).await.unwrap();
    let mine = store.todos(me.account, me.user, true).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert!(mine[0].done_at.is_some());
}

#[tokio::test]
async fn web_fetch_returns_the_text_of_a_page_within_limits() {
    let server = MockServer::start().await;
    let html = "<html><head><title>T</title></head><body><h1>Thinklio</h1><p>Hello <b>world</b>.</p></body></html>";
    Mock::given(method("GET"))
        .and(path("/page"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(html, "text/html; charset=utf-8"))
        .mount(&server)
        .await;
    let big = "x".repeat(builtin::WEB_FETCH_MAX_BYTES + 10);
    Mock::given(method("GET"))
        .and(path("/big"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(big, "text/plain"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/image"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(vec![0u8, 1, 2], "image/png"))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let model = script(&[&[
        (
            "web_fetch",
            json!({ "url": format!("{}/page", server.uri()) }),
        ),
        (
            "web_fetch",
            json!({ "url": format!("{}/big", server.uri()) }),
        ),
        (
            "web_fetch",
            json!({ "url": format!("{}/image", server.uri()) }),
        ),
        ("web_fetch", json!({ "url": "file:///etc/passwd" })),
        ("clock", json!({})),
    ]]);
    let rt = runtime(&dir, model).await;
    let got = acts(&rt, Principal::local()).await;
    let page = got[0].clone().unwrap();
    let text = page["text"].as_str().unwrap();
    assert!(
        text.contains("Thinklio") && text.contains("Hello") && text.contains("world"),
        "{text}"
    );
    assert!(!text.contains("<p>"), "{text}");
    assert_eq!(page["truncated"], json!(false));
    let big = got[1].clone().unwrap();
    assert_eq!(big["truncated"], json!(true));
    assert_eq!(
        big["text"].as_str().unwrap().chars().count(),
        builtin::WEB_FETCH_MAX_CHARS
    );
    assert!(
        got[2].clone().unwrap_err().contains("not text"),
        "{:?}",
        got[2]
    );
    assert!(
        got[3].clone().unwrap_err().contains("only http and https"),
        "{:?}",
        got[3]
    );
    let now = got[4].clone().unwrap();
    assert!(
        now.as_str().unwrap().parse::<jiff::Timestamp>().is_ok(),
        "{now}"
    );
}

#[tokio::test]
async fn web_fetch_refuses_private_addresses_unless_allowed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/secret"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("instance credentials", "text/plain"))
        .mount(&server)
        .await;
    let port = server.address().port();
    // Redirects from an allowed page to places that are not allowed.
    for (from, to) in [
        (
            "/to-metadata",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ),
        ("/to-localhost", format!("http://localhost:{port}/secret")),
        (
            "/to-mapped",
            format!("http://[::ffff:127.0.0.1]:{port}/secret"),
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(from))
            .respond_with(ResponseTemplate::new(302).insert_header("location", to.as_str()))
            .mount(&server)
            .await;
    }
    let urls = [
        format!("http://127.0.0.1:{port}/secret"),
        format!("http://localhost:{port}/secret"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/secret"),
        format!("http://0.0.0.0:{port}/secret"),
    ];
    let calls: Vec<(&str, Value)> = urls
        .iter()
        .map(|u| ("web_fetch", json!({ "url": u })))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with(&dir, script(&[&calls]), builtin::web_fetch()).await;
    for (url, got) in urls.iter().zip(acts(&rt, Principal::local()).await) {
        let err = got.expect_err(url);
        assert!(err.contains("not a public address"), "{url}: {err}");
        assert!(!err.contains("instance credentials"), "{err}");
    }

    // Allowed by address, the page itself is fetched, but no redirect leaves
    // what is allowed.
    let calls: Vec<(&str, Value)> = ["/secret", "/to-metadata", "/to-localhost", "/to-mapped"]
        .iter()
        .map(|p| {
            (
                "web_fetch",
                json!({ "url": format!("http://127.0.0.1:{port}{p}") }),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let allowed = OutboundPolicy::public_only().allow_host("127.0.0.1");
    let rt = runtime_with(&dir, script(&[&calls]), builtin::web_fetch_with(allowed)).await;
    let got = acts(&rt, Principal::local()).await;
    assert_eq!(got[0].clone().unwrap()["text"], "instance credentials");
    for (p, r) in ["/to-metadata", "/to-localhost", "/to-mapped"]
        .iter()
        .zip(&got[1..])
    {
        let err = r.clone().expect_err(p);
        assert!(err.contains("not a public address"), "{p}: {err}");
    }
}
