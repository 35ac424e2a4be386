//! Retries, `Retry-After`, errors that keep status and headers, and fallback
//! across models, against a local server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::time::{Duration, Instant};

use serde_json::json;
use thinklio_core::{ChatMessage, ChatModel, ChatRequest, ModelError};
use thinklio_llm::{Anthropic, ApiKey, FallbackChain, HttpRetry, OpenAiCompatible};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#;

const RATE_LIMITED: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o-mini","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;

fn request() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("hi")])
}

fn fast_retry() -> HttpRetry {
    HttpRetry {
        max_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    }
}

fn completion() -> serde_json::Value {
    serde_json::from_str(OK).unwrap()
}

fn openai(server: &MockServer) -> OpenAiCompatible {
    OpenAiCompatible::new(format!("{}/v1", server.uri()), Some(ApiKey::new("k")))
        .retry(fast_retry())
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_delay() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_raw(RATE_LIMITED, "application/json"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&server)
        .await;
    let started = Instant::now();
    let response = openai(&server).chat(&request()).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(response.message.content, "Hello!");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    // The backoff alone would have waited ~10 ms; Retry-After asked for 1 s.
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(OK, "application/json"))
        .mount(&server)
        .await;
    openai(&server).chat(&request()).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 3);

    let bad = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("x-request-id", "req_123")
                .set_body_raw(
                    r#"{"error":{"message":"Invalid 'messages'","type":"invalid_request_error"}}"#,
                    "application/json",
                ),
        )
        .mount(&bad)
        .await;
    let err = openai(&bad).chat(&request()).await.unwrap_err();
    assert_eq!(
        bad.received_requests().await.unwrap().len(),
        1,
        "a 400 is not retried"
    );
    let ModelError::Http {
        status,
        headers,
        message,
    } = &err
    else {
        panic!("expected an HTTP error, got {err:?}");
    };
    assert_eq!(*status, 400);
    assert_eq!(message, "Invalid 'messages'");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-request-id" && v == "req_123")
    );
}

#[tokio::test]
async fn retries_stop_after_the_limit_with_the_last_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let err = openai(&server).chat(&request()).await.unwrap_err();
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        4,
        "one try and three retries"
    );
    assert_eq!(err.code(), "model.http");
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_is_returned_not_waited() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3600"))
        .mount(&server)
        .await;
    let err = openai(&server).chat(&request()).await.unwrap_err();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
}

#[tokio::test]
async fn a_fallback_model_answers_when_the_first_fails() {
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&failing)
        .await;
    let anthropic = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{ "type": "text", "text": "Hi from the backup." }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": { "input_tokens": 8, "output_tokens": 6 }
        })))
        .mount(&anthropic)
        .await;
    let chain = FallbackChain::new()
        .then(openai(&failing).retry(HttpRetry::none()), None)
        .then(
            Anthropic::new(anthropic.uri(), ApiKey::new("k")),
            Some("claude-haiku-4-5"),
        );
    let response = chain.chat(&request()).await.unwrap();
    assert_eq!(response.message.content, "Hi from the backup.");
    assert_eq!(response.model, "claude-haiku-4-5");
    let sent: serde_json::Value = anthropic.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(
        sent["model"], "claude-haiku-4-5",
        "the link's model id replaces the requested one"
    );

    let all_fail = FallbackChain::new()
        .then(openai(&failing).retry(HttpRetry::none()), None)
        .then(openai(&failing).retry(HttpRetry::none()), Some("gpt-4o"));
    let err = all_fail.chat(&request()).await.unwrap_err();
    let ModelError::FallbackExhausted(errors) = err else {
        panic!("expected exhaustion");
    };
    assert_eq!(
        errors.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
        vec!["gpt-4o-mini", "gpt-4o"]
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_a_transport_error() {
    // Port 9 (discard) on loopback: nothing listens there.
    let provider = OpenAiCompatible::new("http://127.0.0.1:9/v1", None).retry(HttpRetry::none());
    let err = provider.chat(&request()).await.unwrap_err();
    assert_eq!(err.code(), "model.transport", "{err}");
    assert!(err.is_retryable());
}

#[test]
fn keys_never_reach_debug_output() {
    let p = OpenAiCompatible::new(
        "https://api.openai.com/v1",
        Some(ApiKey::new("sk-live-secret")),
    );
    let a = Anthropic::new("https://api.anthropic.com", ApiKey::new("sk-ant-secret"));
    let shown = format!("{p:?} {a:?}");
    assert!(!shown.contains("secret"), "{shown}");
}

#[tokio::test]
async fn an_absurd_retry_after_is_returned_not_a_panic() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1e20"))
        .mount(&server)
        .await;
    let err = openai(&server).chat(&request()).await.unwrap_err();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert_eq!(err.code(), "model.rate_limited");
    assert_eq!(err.retry_after(), Some(Duration::MAX));
}

#[tokio::test]
async fn an_http_date_retry_after_is_waited_for() {
    let server = MockServer::start().await;
    // A date in the past asks for no wait: the retry comes at once.
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion()))
        .mount(&server)
        .await;
    let retry = HttpRetry {
        max_retries: 1,
        // Were the date ignored, the backoff would be an hour, past the
        // test's patience.
        base_delay: Duration::from_secs(3600),
        max_delay: Duration::from_secs(7200),
    };
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        openai(&server).retry(retry).chat(&request()),
    )
    .await
    .expect("the date was read: no backoff of an hour")
    .unwrap();
    assert_eq!(answer.message.content, "Hello!");
    // A date an hour ahead is more than this caller waits: returned.
    let server = MockServer::start().await;
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", later.as_str()))
        .mount(&server)
        .await;
    let err = openai(&server).chat(&request()).await.unwrap_err();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert!(err.retry_after().unwrap() > Duration::from_secs(3500));
}

#[tokio::test]
async fn a_refused_request_does_not_fall_back() {
    for status in [400, 401, 403] {
        let refusing = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({
                "error": { "message": "no", "type": "invalid_request_error", "param": null, "code": null }
            })))
            .mount(&refusing)
            .await;
        let backup = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(completion()))
            .mount(&backup)
            .await;
        let chain = FallbackChain::new()
            .then(openai(&refusing).retry(HttpRetry::none()), None)
            .then(openai(&backup).retry(HttpRetry::none()), Some("gpt-4o"));
        let err = chain.chat(&request()).await.unwrap_err();
        assert!(
            matches!(err, ModelError::Http { status: s, .. } if s == status),
            "{err}"
        );
        assert!(
            backup.received_requests().await.unwrap().is_empty(),
            "HTTP {status} is the caller's to fix, not the next model's"
        );
    }
}
