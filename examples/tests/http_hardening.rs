//! The HTTP host under hostile and careless use: scoped keys, budgets per
//! key, per account and per client address, no key made unasked, no
//! internal detail in a `500`, JSON errors for requests it cannot read,
//! request timeouts that leave the work running, panics caught, and a stop
//! that lets requests in flight finish.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, code};
use thinklio_core::{
    ChatMessage, ChatModel, ChatRequest, ChatResponse, ChatStream, FinishReason, ModelError,
    TokenUsage,
};
use thinklio_examples::http::HttpConfig;
use thinklio_examples::http::server::{ServerArgs, start};

/// A model that says when a call reached it and answers only when told.
struct Gate {
    entered: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            entered: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

#[async_trait::async_trait]
impl ChatModel for Gate {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        self.entered.notify_one();
        let permit = self.release.acquire().await;
        drop(permit);
        Ok(ChatResponse {
            model: request.model.clone(),
            message: ChatMessage::assistant("at last"),
            usage: TokenUsage::new(3, 2),
            finish_reason: FinishReason::Stop,
        })
    }

    async fn chat_stream(&self, _: &ChatRequest) -> Result<ChatStream, ModelError> {
        Err(ModelError::Config("this test model does not stream".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_key_cannot_mint_or_revoke_keys_nor_read_the_account() {
    let api = Api::start_with(HttpConfig::new("assistant").max_keys_per_account(3)).await;
    let (status, created) = api
        .post("/v1/keys", json!({ "label": "web", "scope": "chat" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["key"]["scope"], "chat");
    let chat = created["secret"].as_str().unwrap().to_owned();
    let (_, keys) = api.get("/v1/keys").await;
    let admin_id = keys[0]["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (
            "POST",
            "/v1/keys".to_owned(),
            Some(json!({ "label": "more", "scope": "admin" })),
        ),
        ("GET", "/v1/keys".to_owned(), None),
        ("DELETE", format!("/v1/keys/{admin_id}"), None),
        ("GET", "/v1/usage".to_owned(), None),
        ("GET", "/v1/users/ada/facts".to_owned(), None),
        ("DELETE", "/v1/users/ada/facts".to_owned(), None),
    ] {
        let (status, err) = api.call(method, &path, Some(&chat), body).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::FORBIDDEN, "auth.scope"),
            "{method} {path}"
        );
    }
    // What a chat key is for still works.
    let (status, _) = api
        .call(
            "POST",
            "/v1/sessions",
            Some(&chat),
            Some(json!({ "user": "ada" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // The admin key made nothing more than allowed: three live keys at most.
    let (status, _) = api.post("/v1/keys", json!({ "label": "third" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = api.post("/v1/keys", json!({ "label": "fourth" })).await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "key.too_many"));
    let (status, _) = api.get("/v1/usage").await;
    assert_eq!(status, StatusCode::OK, "the admin key still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_keys_share_one_request_budget() {
    let api = Api::start_with(
        HttpConfig::new("assistant")
            .requests_per_minute(100)
            .account_requests_per_minute(6),
    )
    .await;
    let (_, created) = api.post("/v1/keys", json!({ "label": "second" })).await;
    let second = created["secret"].as_str().unwrap().to_owned();
    // One request made the key; five more, spread over both keys.
    for key in [&api.key, &second, &api.key, &second, &api.key] {
        let (status, body) = api
            .call("GET", "/v1/sessions?user=ada", Some(key), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, err) = api
        .call("GET", "/v1/sessions?user=ada", Some(&second), None)
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited.account"),
        "a new key is no new budget"
    );
    let (status, _) = api
        .call("GET", "/v1/sessions?user=ada", Some(&api.other_key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "another account is not held back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_key_checks_are_limited_per_client_address() {
    let api = Api::start_with(HttpConfig::new("assistant").failed_auth_per_minute(3)).await;
    for n in 0..4 {
        let (status, err) = api
            .call("GET", "/v1/keys", Some(&format!("tk_guess{n}")), None)
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::UNAUTHORIZED, "auth.invalid_key")
        );
    }
    // Out of failed checks: even a good key from this address waits, so a
    // guesser cannot tell a hit from a miss.
    let response = api
        .http
        .get(format!("{}/v1/keys", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), "auth.too_many_failures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_callbacks_are_limited_per_client_address() {
    let api = Api::start_with(
        HttpConfig::new("assistant")
            .callbacks_per_minute(3)
            .failed_auth_per_minute(100),
    )
    .await;
    let job = thinklio_core::JobId::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = api
            .http
            .post(format!("{}/v1/jobs/{job}/report", api.base))
            .bearer_auth("not-a-token")
            .json(&json!({ "status": "progress", "progress": 1 }))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert!(
        statuses[..3]
            .iter()
            .all(|s| *s != StatusCode::TOO_MANY_REQUESTS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_every_key_revoked_makes_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs {
        db: dir.path().join("keys.db"),
        addr: "127.0.0.1:0".parse().unwrap(),
        requests_per_minute: 600,
        metrics_addr: None,
        retain_days: None,
        command: None,
    };
    let server = start(&args, None).await.unwrap();
    let first = server
        .first_keys
        .clone()
        .expect("a new file gets first keys");
    for key in server.host.keys().list(first.account).await.unwrap() {
        assert!(
            server
                .host
                .keys()
                .revoke(first.account, &key.id)
                .await
                .unwrap()
        );
    }
    server.shutdown(Duration::from_secs(5)).await.unwrap();
    let again = start(&args, None).await.unwrap();
    assert!(
        again.first_keys.is_none(),
        "no key is made unasked once an account exists"
    );
    assert!(!again.host.keys().any_live().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_never_carries_internal_detail() {
    let api = Api::start(1000).await;
    // The key table goes away under the server.
    let db = rusqlite::Connection::open(&api.db).unwrap();
    db.execute_batch("DROP TABLE http_api_keys").unwrap();
    let (status, err) = api.get("/v1/sessions?user=ada").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(code(&err), "keys.storage");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("reference"), "{message}");
    for detail in ["http_api_keys", "no such table", "SQL"] {
        assert!(!message.contains(detail), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_api_cannot_read_get_json_errors() {
    let api = Api::start_with(HttpConfig::new("assistant").max_body_bytes(4096)).await;
    let raw = |method: &str, path: &str, body: &str, json: bool| {
        let mut r = api
            .http
            .request(method.parse().unwrap(), format!("{}{path}", api.base))
            .bearer_auth(&api.key)
            .body(body.to_owned());
        if json {
            r = r.header("content-type", "application/json");
        }
        async move {
            let response = r.send().await.unwrap();
            let status = response.status();
            let body: Value = response
                .json()
                .await
                .unwrap_or_else(|e| panic!("not JSON ({status}): {e}"));
            (status, code(&body).to_owned())
        }
    };
    let big = format!(r#"{{"user": "{}"}}"#, "x".repeat(5000));
    for (method, path, body, json, want) in [
        (
            "POST",
            "/v1/sessions",
            "{not json",
            true,
            (StatusCode::BAD_REQUEST, "request.bad_json"),
        ),
        (
            "POST",
            "/v1/sessions",
            r#"{"user": 5}"#,
            true,
            (StatusCode::BAD_REQUEST, "request.bad_json"),
        ),
        (
            "POST",
            "/v1/sessions",
            r#"{"user": "ada"}"#,
            false,
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "request.not_json"),
        ),
        (
            "POST",
            "/v1/sessions",
            big.as_str(),
            true,
            (StatusCode::PAYLOAD_TOO_LARGE, "request.too_large"),
        ),
        (
            "GET",
            "/v1/sessions",
            "",
            false,
            (StatusCode::BAD_REQUEST, "request.bad_query"),
        ),
        (
            "GET",
            "/v1/usage?user=a&user=b",
            "",
            false,
            (StatusCode::BAD_REQUEST, "request.bad_query"),
        ),
        (
            "GET",
            "/nothing/here",
            "",
            false,
            (StatusCode::NOT_FOUND, "route.not_found"),
        ),
    ] {
        let (status, code) = raw(method, path, body, json).await;
        assert_eq!(
            (status, code.as_str()),
            (want.0, want.1),
            "{method} {path} {body:.40}"
        );
    }
    let session = api.session("ada").await;
    let (status, code) = raw(
        "POST",
        &format!("/v1/sessions/{session}/messages?stream=maybe"),
        r#"{"text": "hi"}"#,
        true,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "request.bad_query")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_gets_a_json_504_and_its_work_finishes() {
    let gate = Arc::new(Gate::default());
    let api = Api::start_with_model(
        HttpConfig::new("assistant").request_timeout(Duration::from_millis(200)),
        gate.clone(),
    )
    .await;
    let session = api.session("ada").await;
    let entered = gate.entered.notified();
    let (status, err) = api
        .post(
            &format!("/v1/sessions/{session}/messages"),
            json!({ "text": "take your time" }),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::GATEWAY_TIMEOUT, "request.timeout")
    );
    entered.await;
    gate.release.add_permits(1);
    // The interaction was not cancelled with the request: its reply lands.
    let mut events = api.host.runtime().subscribe();
    loop {
        let (_, history) = api.get(&format!("/v1/sessions/{session}/messages")).await;
        if history.as_array().is_some_and(|h| !h.is_empty()) {
            assert_eq!(history[0]["assistant"], "at last");
            break;
        }
        tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("the interaction goes on")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_a_json_500() {
    let host = Api::start(1000).await.host;
    let app = host.guard(axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            panic!("internal state the client must not see");
            #[allow(unreachable_code)]
            "never"
        }),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let response = reqwest::get(format!("http://{addr}/boom")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), "host.panicked");
    assert!(!body.to_string().contains("internal state"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_the_requests_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs {
        db: dir.path().join("stop.db"),
        addr: "127.0.0.1:0".parse().unwrap(),
        requests_per_minute: 600,
        metrics_addr: None,
        retain_days: None,
        command: None,
    };
    let gate = Arc::new(Gate::default());
    let server = start(&args, Some((gate.clone(), "gated".to_owned())))
        .await
        .unwrap();
    let first = server.first_keys.clone().unwrap();
    let chat = first.web_chat.split("#key=").nth(1).unwrap().to_owned();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(&chat)
        .json(&json!({ "user": "ada" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["id"].as_str().unwrap().to_owned();
    let entered = gate.entered.notified();
    let in_flight = tokio::spawn({
        let (http, base, chat) = (http.clone(), base.clone(), chat.clone());
        async move {
            http.post(format!("{base}/v1/sessions/{id}/messages"))
                .bearer_auth(&chat)
                .json(&json!({ "text": "hello" }))
                .send()
                .await
        }
    });
    entered.await;
    let stopping = tokio::spawn(server.shutdown(Duration::from_secs(30)));
    gate.release.add_permits(1);
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the request in flight was answered"
    );
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["text"], "at last");
    stopping.await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("{base}/")).await.is_err(),
        "a stopped server takes no new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_user_over_http_deletes_everything_they_own() {
    let api = Api::start(1000).await;
    let session = api.session("ada").await;
    let (status, _) = api
        .post(
            &format!("/v1/sessions/{session}/messages"),
            json!({ "text": "what is 2+2?" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, job) = api
        .post(
            "/v1/jobs",
            json!({ "user": "ada", "capability": "word_count", "input": { "text": "a b c" } }),
        )
        .await;
    assert!(status.is_success(), "{job}");
    let fact = json!({ "layer": "user", "user": "ada", "subject": "ada", "predicate": "lives in", "value": "Lisbon" });
    assert_eq!(api.post("/v1/facts", fact).await.0, StatusCode::CREATED);
    let bob = api.session("bob").await;

    let (status, forgotten) = api
        .call("DELETE", "/v1/users/ada", Some(&api.key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{forgotten}");
    assert!(
        forgotten["sessions"].as_u64().unwrap() >= 2,
        "her chat and her jobs conversation: {forgotten}"
    );
    assert_eq!(forgotten["jobs"], 1, "{forgotten}");
    assert_eq!(forgotten["facts"], 1, "{forgotten}");
    assert_eq!(forgotten["memberships"], 1, "{forgotten}");
    let (_, sessions) = api.get("/v1/sessions?user=ada").await;
    assert_eq!(sessions, json!([]));
    let (status, _) = api
        .get(&format!("/v1/jobs/{}", job["job"]["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, export) = api.get("/v1/users/ada/facts").await;
    assert!(!export.to_string().contains("Lisbon"), "{export}");
    // Bob keeps his; Ada starts afresh.
    let (_, theirs) = api.get("/v1/sessions?user=bob").await;
    assert_eq!(theirs[0]["id"], bob);
    let again = api.session("ada").await;
    let (status, reply) = api
        .post(
            &format!("/v1/sessions/{again}/messages"),
            json!({ "text": "what is 3+3?" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    // Only an admin key forgets.
    let (_, created) = api.post("/v1/keys", json!({ "label": "chat" })).await;
    let chat = created["secret"].as_str().unwrap().to_owned();
    let (status, err) = api.call("DELETE", "/v1/users/bob", Some(&chat), None).await;
    assert_eq!((status, code(&err)), (StatusCode::FORBIDDEN, "auth.scope"));
}

#[test]
fn any_job_callback_is_answered_without_a_500() {
    use proptest::prelude::*;
    use thinklio_core::fuzz;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(Api::start_with(
        HttpConfig::new("assistant")
            .callbacks_per_minute(1_000_000)
            .failed_auth_per_minute(1_000_000),
    ));
    let report =
        json!({ "status": "resolved", "result": { "words": 3 }, "context": { "note": "done" } });
    let ids = prop_oneof![
        Just(thinklio_core::JobId::new().to_string()),
        "[0-9a-f-]{0,40}",
        fuzz::text(),
    ];
    let bodies = prop_oneof![fuzz::json(), fuzz::mutated(report)];
    proptest!(fuzz::config(), |(id in ids, token in fuzz::text(), body in bodies)| {
        let status = rt.block_on(async {
            // The id is one path segment, percent-encoded whatever it holds
            // (an id like `a:b` must not read as a URL of its own).
            let mut url = reqwest::Url::parse(&api.base).unwrap();
            url.path_segments_mut().unwrap().pop_if_empty().extend(["v1", "jobs", id.as_str(), "report"]);
            let mut request = api.http.post(url).json(&body);
            if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
                request = request.header("authorization", v);
            }
            request.send().await.unwrap().status()
        });
        prop_assert!(!status.is_server_error(), "{status} for {id:?} {body}");
    });
}

#[test]
fn any_decision_or_mode_body_is_answered_without_a_500() {
    use proptest::prelude::*;
    use thinklio_core::fuzz;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(Api::start_with(
        HttpConfig::new("careful").failed_auth_per_minute(1_000_000),
    ));
    let session = rt.block_on(api.session("ada"));
    let decision = json!({ "decision": "edit", "arguments": { "text": "milk" }, "reason": "ok" });
    let ids = prop_oneof![
        Just(thinklio_core::StepId::new().to_string()),
        "[0-9a-f-]{0,40}",
        fuzz::text(),
    ];
    let bodies = prop_oneof![
        fuzz::json(),
        fuzz::mutated(decision),
        fuzz::mutated(json!({ "mode": "draft" })),
    ];
    proptest!(fuzz::config(), |(id in ids, body in bodies)| {
        let (decided, mode) = rt.block_on(async {
            let mut url = reqwest::Url::parse(&api.base).unwrap();
            url.path_segments_mut().unwrap().pop_if_empty().extend(["v1", "approvals", id.as_str()]);
            let decided = api.http.post(url).bearer_auth(&api.key).json(&body).send().await.unwrap().status();
            let mode = api
                .http
                .put(format!("{}/v1/sessions/{session}/approval_mode", api.base))
                .bearer_auth(&api.key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status();
            (decided, mode)
        });
        prop_assert!(!decided.is_server_error(), "{decided} for {id:?} {body}");
        prop_assert!(!mode.is_server_error(), "{mode} for {body}");
    });
}

#[test]
fn any_message_body_with_images_is_answered_without_a_500() {
    use proptest::prelude::*;
    use thinklio_core::fuzz;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(Api::start_with(
        HttpConfig::new("assistant").failed_auth_per_minute(1_000_000),
    ));
    let session = rt.block_on(api.session("ada"));
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAADCAIAAAA7ljmRAAAAEElEQVR4nGM4kWIERww4OQBHKhBpqqu7qgAAAABJRU5ErkJggg==";
    let message = json!({ "text": "look", "images": [
        { "data": PNG, "media_type": "image/png" },
        { "url": "https://example.com/a.png" },
    ] });
    let bodies = prop_oneof![fuzz::json(), fuzz::mutated(message)];
    // Forms: fields in any order and shape, with bytes of any kind.
    let forms = (
        proptest::collection::vec(
            (
                prop_oneof![Just("text"), Just("id"), Just("image"), Just("other")],
                proptest::collection::vec(any::<u8>(), 0..64),
                prop_oneof![
                    Just("image/png"),
                    Just("application/octet-stream"),
                    Just("text/plain")
                ],
            ),
            0..4,
        ),
        any::<bool>(),
    );
    proptest!(fuzz::config(), |(body in bodies, (parts, close) in forms)| {
        let (json_status, form_status) = rt.block_on(async {
            let url = format!("{}/v1/sessions/{session}/messages", api.base);
            let json_status = api.http.post(&url).bearer_auth(&api.key).json(&body).send().await.unwrap().status();
            let boundary = "fuzzboundary";
            let mut form = Vec::new();
            for (name, bytes, media_type) in &parts {
                form.extend_from_slice(format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\nContent-Type: {media_type}\r\n\r\n"
                ).as_bytes());
                form.extend_from_slice(bytes);
                form.extend_from_slice(b"\r\n");
            }
            if close {
                form.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            }
            let form_status = api
                .http
                .post(&url)
                .bearer_auth(&api.key)
                .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                .body(form)
                .send()
                .await
                .unwrap()
                .status();
            (json_status, form_status)
        });
        prop_assert!(!json_status.is_server_error(), "{json_status} for {body}");
        prop_assert!(!form_status.is_server_error(), "{form_status} for {parts:?}");
    });
}

#[test]
fn any_agent_definition_is_answered_without_a_500() {
    use proptest::prelude::*;
    use thinklio_core::fuzz;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(Api::start_with(
        HttpConfig::new("assistant").failed_auth_per_minute(1_000_000),
    ));
    let definition = json!({
        "id": "helper", "model": "offline", "system_prompt": "Help.",
        "capabilities": ["calculator"], "trust_level": "standard", "max_turns": 4,
        "temperature": 0.5, "stop": ["END"], "approval_mode": "autopilot",
        "interaction_deadline": 30, "approval_timeout": 60,
    });
    let bodies = prop_oneof![fuzz::json(), fuzz::mutated(definition.clone())];
    let updates = prop_oneof![
        fuzz::json(),
        fuzz::mutated(json!({ "version": 1, "definition": definition })),
    ];
    proptest!(fuzz::config(), |(body in bodies, update in updates)| {
        let (created, changed) = rt.block_on(async {
            let created = api.http.post(format!("{}/v1/agents", api.base))
                .bearer_auth(&api.key).json(&body).send().await.unwrap().status();
            let changed = api.http.put(format!("{}/v1/agents/helper", api.base))
                .bearer_auth(&api.key).json(&update).send().await.unwrap().status();
            (created, changed)
        });
        prop_assert!(!created.is_server_error(), "{created} for {body}");
        prop_assert!(!changed.is_server_error(), "{changed} for {update}");
    });
}
