//! Webhooks through the real harness, against a local HTTP server that checks
//! the HMAC signature of every request it gets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::time::Duration;

use serde_json::{Value, json};
use thinklio_capabilities::{
    DEFAULT_TOLERANCE, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookCapability, WebhookSecret, verify,
};
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SECRET: &str = "s3cret-for-tests";

/// Answers like a receiver that checks signatures with [`verify`]: 401
/// unless the signature matches the timestamp and body and the timestamp is
/// recent, else `answer`.
struct Verifying {
    answer: ResponseTemplate,
}

impl Respond for Verifying {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let now = jiff::Timestamp::now().as_second();
        match verify(
            &WebhookSecret::new(SECRET),
            &header(TIMESTAMP_HEADER),
            &header(SIGNATURE_HEADER),
            &request.body,
            now,
            DEFAULT_TOLERANCE,
        ) {
            Ok(()) => self.answer.clone(),
            Err(e) => ResponseTemplate::new(401).set_body_string(e.to_string()),
        }
    }
}

async fn server(answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Verifying { answer })
        .mount(&server)
        .await;
    server
}

fn webhook(server: &MockServer, secret: &str) -> WebhookCapability {
    WebhookCapability::new(
        "create_ticket",
        "Opens a support ticket.",
        format!("{}/hooks/ticket", server.uri()),
        WebhookSecret::new(secret),
    )
    .parameters(json!({
        "type": "object",
        "properties": { "title": { "type": "string" } },
        "required": ["title"]
    }))
    .returns(json!({ "type": "object", "properties": { "id": { "type": "string" } }, "required": ["id"] }))
    .retries(2, Duration::from_millis(5))
}

async fn run(capability: WebhookCapability) -> (Step, Step, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("c1", "create_ticket", r#"{"title": "printer on fire"}"#),
        ScriptedReply::text("done"),
    ]);
    let runtime = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("w.db")).await.unwrap())
        .model(model)
        .capability(capability)
        .agent(AgentDefinition::new("a", "m").capabilities(["create_ticket"]))
        .build()
        .unwrap();
    let session = runtime
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let reply = runtime.send(session.id, "file it").await.unwrap();
    let steps = runtime
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    let act = steps
        .iter()
        .find(|s| s.kind == StepKind::Act)
        .unwrap()
        .clone();
    let observe = steps
        .iter()
        .find(|s| s.kind == StepKind::Observe)
        .unwrap()
        .clone();
    (act, observe, dir)
}

#[tokio::test]
async fn a_signed_call_returns_the_checked_response() {
    let server = server(ResponseTemplate::new(200).set_body_json(json!({ "id": "T-42" }))).await;
    let (act, observe, _dir) = run(webhook(&server, SECRET)).await;
    assert_eq!(act.state, StepState::Succeeded, "{:?}", act.error);
    assert_eq!(act.output.unwrap()["result"], json!({ "id": "T-42" }));
    assert_eq!(observe.output.unwrap()["content"], r#"{"id":"T-42"}"#);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body: Value = requests[0].body_json().unwrap();
    assert_eq!(body, json!({ "title": "printer on fire" }));
    let key = requests[0]
        .headers
        .get("x-thinklio-idempotency-key")
        .unwrap();
    assert_eq!(key.to_str().unwrap(), act.idempotency_key);
}

#[tokio::test]
async fn a_wrong_secret_is_rejected_by_the_receiver_and_observed() {
    let server = server(ResponseTemplate::new(200).set_body_json(json!({ "id": "T-1" }))).await;
    let (act, observe, _dir) = run(webhook(&server, "not the secret")).await;
    assert_eq!(act.error.unwrap().code, "capability.failed");
    let seen = observe.output.unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(seen.contains("HTTP 401"), "{seen}");
}

#[tokio::test]
async fn a_response_that_breaks_the_return_schema_fails_the_call() {
    let server = server(ResponseTemplate::new(200).set_body_json(json!({ "ticket": 7 }))).await;
    let (act, _, _dir) = run(webhook(&server, SECRET)).await;
    assert_eq!(act.error.unwrap().code, "capability.invalid_result");
}

#[tokio::test]
async fn only_repeatable_webhooks_are_retried() {
    let server = server(ResponseTemplate::new(503)).await;
    let (act, _, _dir) = run(webhook(&server, SECRET)).await;
    assert_eq!(act.error.unwrap().code, "capability.failed");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "external: called once"
    );

    let server = self::server(ResponseTemplate::new(503)).await;
    let (act, _, _dir) = run(webhook(&server, SECRET).side_effect(SideEffect::Idempotent)).await;
    assert!(act.error.unwrap().message.contains("HTTP 503"));
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        3,
        "idempotent: two retries"
    );
}

#[test]
fn secrets_do_not_print() {
    let hook = WebhookCapability::new(
        "x",
        "x",
        "http://127.0.0.1:9",
        WebhookSecret::new("hunter2"),
    );
    assert!(!format!("{hook:?}").contains("hunter2"));
}

#[tokio::test]
async fn an_answer_longer_than_the_limit_fails_the_call_unread() {
    let huge = json!({ "id": "T-9", "padding": "x".repeat(64 * 1024) });
    let server = server(ResponseTemplate::new(200).set_body_json(huge)).await;
    let (act, observe, _dir) = run(webhook(&server, SECRET).max_response_bytes(4096)).await;
    assert_eq!(act.error.unwrap().code, "capability.invalid_result");
    let seen = observe.output.unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(seen.contains("longer than 4096 bytes"), "{seen}");
}

#[test]
fn a_replayed_or_altered_request_fails_verification() {
    use thinklio_capabilities::{SignatureError, sign};
    let secret = WebhookSecret::new(SECRET);
    let body = br#"{"title":"printer on fire"}"#;
    let at = 1_790_000_000;
    let signature = sign(&secret, at, body);
    let check = |ts: &str, sig: &str, body: &[u8], now: i64| {
        verify(&secret, ts, sig, body, now, DEFAULT_TOLERANCE)
    };
    assert_eq!(check("1790000000", &signature, body, at + 299), Ok(()));
    assert_eq!(
        check("1790000000", &signature, body, at - 299),
        Ok(()),
        "a receiver's clock a little behind"
    );
    assert_eq!(
        check("1790000000", &signature, body, at + 3600),
        Err(SignatureError::OutsideTolerance { seconds: 3600 }),
        "the same request played an hour later"
    );
    // A fresh timestamp on an old signature: the signature covers the time.
    assert_eq!(
        check("1790003600", &signature, body, at + 3600),
        Err(SignatureError::BadSignature)
    );
    assert_eq!(
        check("1790000000", &signature, b"{\"title\":\"all fine\"}", at),
        Err(SignatureError::BadSignature)
    );
    assert_eq!(
        check("yesterday", &signature, body, at),
        Err(SignatureError::BadTimestamp)
    );
    assert_eq!(
        check("1790000000", "sha256=zz", body, at),
        Err(SignatureError::BadSignature)
    );
    assert_eq!(
        check("1790000000", "", body, at),
        Err(SignatureError::BadSignature)
    );
    let other = verify(
        &WebhookSecret::new("other"),
        "1790000000",
        &signature,
        body,
        at,
        DEFAULT_TOLERANCE,
    );
    assert_eq!(other, Err(SignatureError::BadSignature));
}

proptest::proptest! {
    #![proptest_config(thinklio_core::fuzz::config())]

    #[test]
    fn any_signed_request_is_judged_without_panic(
        timestamp in thinklio_core::fuzz::text(),
        signature in proptest::prelude::prop_oneof![
            thinklio_core::fuzz::text(),
            "sha256=[0-9a-f]{0,70}",
        ],
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        now in proptest::prelude::any::<i64>(),
    ) {
        let _ = verify(&WebhookSecret::new(SECRET), &timestamp, &signature, &body, now, DEFAULT_TOLERANCE);
    }
}
