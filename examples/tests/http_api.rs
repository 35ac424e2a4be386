//! The HTTP host over real sockets: every `/v1/` route refuses a request
//! without a key, keys of other accounts and revoked keys are refused with
//! stable codes, each key has its own request budget, and every endpoint
//! does its work (sessions, messages plain and streamed, history, steps,
//! jobs with their callback, knowledge, usage, keys).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_needs_a_key() {
    let api = Api::start(1000).await;
    let (status, doc) = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        "/v1/sessions",
        "/v1/sessions/{id}/messages",
        "/v1/sessions/{id}/events",
        "/v1/interactions/{id}/steps",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/report",
        "/v1/facts",
        "/v1/facts/search",
        "/v1/users/{user}/facts",
        "/v1/users/{user}",
        "/v1/usage",
        "/v1/usage/agents",
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/approvals",
        "/v1/approvals/{id}",
        "/v1/agents",
        "/v1/agents/{id}",
        "/v1/agents/{id}/pause",
        "/v1/agents/{id}/resume",
        "/v1/agents/{id}/archive",
        "/v1/agents/{id}/versions",
        "/v1/agents/{id}/graph",
        "/v1/agents/{id}/clone",
        "/v1/templates",
        "/v1/templates/{id}",
        "/v1/templates/{id}/instantiate",
        "/v1/templates/{id}/sync",
    ];
    for path in expected {
        assert!(
            paths.contains_key(path),
            "{path} is not in the OpenAPI document"
        );
    }
    let mut checked = 0;
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", "01a21bb7-91bd-7224-bb75-a25dfcaec0c4")
            .replace("{user}", "ada");
        for method in ops.as_object().unwrap().keys() {
            let body = matches!(method.as_str(), "post").then(|| json!({}));
            let (status, err) = api
                .call(&method.to_uppercase(), &concrete, None, body)
                .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {err}");
            assert_eq!(code(&err), "auth.missing_key", "{method} {path}");
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} operations");
    // A route that does not exist still asks for a key first, then says so.
    let (status, err) = api.call("GET", "/v1/nothing/here", None, None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "auth.missing_key")
    );
    let (status, err) = api.get("/v1/nothing/here").await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "route.not_found")
    );
    // A wrong key.
    let (status, err) = api.call("GET", "/v1/keys", Some("tk_0000"), None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "auth.invalid_key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_per_account_and_revocable() {
    let api = Api::start(1000).await;
    let session = api.session("ada").await;
    let (status, reply) = api
        .post(
            &format!("/v1/sessions/{session}/messages"),
            json!({ "text": "what is 6*7?" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let interaction = reply["interaction_id"].as_str().unwrap();
    // Another account's key sees nothing of this account.
    for (method, path, body) in [
        (
            "POST",
            format!("/v1/sessions/{session}/messages"),
            Some(json!({ "text": "hi" })),
        ),
        ("GET", format!("/v1/sessions/{session}/messages"), None),
        ("GET", format!("/v1/interactions/{interaction}/steps"), None),
    ] {
        let (status, err) = api.call(method, &path, Some(&api.other_key), body).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::FORBIDDEN, "auth.wrong_account"),
            "{method} {path}"
        );
    }
    // The other account's "ada" is another person: no sessions.
    let (_, theirs) = api
        .call("GET", "/v1/sessions?user=ada", Some(&api.other_key), None)
        .await;
    assert_eq!(theirs.as_array().unwrap().len(), 0);
    let (_, ours) = api.get("/v1/sessions?user=ada").await;
    assert_eq!(ours.as_array().unwrap().len(), 1);

    // A second key, listed without its secret, then revoked.
    let (status, created) = api.post("/v1/keys", json!({ "label": "ci" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let (second, second_id) = (
        created["secret"].as_str().unwrap().to_owned(),
        created["key"]["id"].as_str().unwrap().to_owned(),
    );
    let (status, _) = api
        .call("GET", "/v1/sessions?user=ada", Some(&second), None)
        .await;
    assert_eq!(status, StatusCode::OK, "a new key is a chat key by default");
    let (_, listed) = api.get("/v1/keys").await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(
        !listed.to_string().contains(&second),
        "a listing shows a secret"
    );
    // Another account cannot revoke it.
    let (status, err) = api
        .call(
            "DELETE",
            &format!("/v1/keys/{second_id}"),
            Some(&api.other_key),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "key.not_found")
    );
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/v1/keys/{second_id}"),
            Some(&api.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = api.call("GET", "/v1/usage", Some(&second), None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "auth.revoked_key")
    );
    // The first key still works.
    let (status, _) = api.get("/v1/usage").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_rate_limit() {
    let api = Api::start(5).await;
    for _ in 0..5 {
        let (status, _) = api.get("/v1/usage").await;
        assert_eq!(status, StatusCode::OK);
    }
    let response = api
        .http
        .get(format!("{}/v1/usage", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), "rate_limited");
    // Another key is not held back.
    let (status, _) = api
        .call("GET", "/v1/usage", Some(&api.other_key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_messages_history_and_steps() {
    let api = Api::start(1000).await;
    let session = api.session("ada").await;
    // The same conversation of the same user is the same session.
    let (_, again) = api
        .post(
            "/v1/sessions",
            json!({ "user": "ada", "conversation": "c1" }),
        )
        .await;
    let (_, same) = api
        .post(
            "/v1/sessions",
            json!({ "user": "ada", "conversation": "c1" }),
        )
        .await;
    assert_eq!(again["id"], same["id"]);
    let (_, next) = api
        .post(
            "/v1/sessions",
            json!({ "user": "ada", "conversation": "c1", "new": true }),
        )
        .await;
    assert_ne!(next["id"], same["id"]);
    assert_eq!(next["key"], "c1#1");

    let path = format!("/v1/sessions/{session}/messages");
    let (status, reply) = api
        .post(&path, json!({ "text": "what is 17*23?", "id": "m1" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["text"], "17*23 = 391");
    assert_eq!(reply["steps"], 6);
    assert!(reply["input_tokens"].as_u64().unwrap() > 0);
    // Sent again with the same id: the same answer, not a second one.
    let (_, repeated) = api
        .post(&path, json!({ "text": "what is 17*23?", "id": "m1" }))
        .await;
    assert_eq!(repeated["interaction_id"], reply["interaction_id"]);
    let (status, err) = api.post(&path, json!({ "text": "   " })).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "runtime.empty_message")
    );
    let (status, err) = api
        .post("/v1/sessions/not-an-id/messages", json!({ "text": "hi" }))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "request.bad_id")
    );
    let (status, err) = api
        .post(
            "/v1/sessions/01a21bb7-91bd-7224-bb75-a25dfcaec0c4/messages",
            json!({ "text": "hi" }),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "session.not_found")
    );

    let (_, history) = api.get(&path).await;
    let turns = history.as_array().unwrap();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0]["user"], "what is 17*23?");
    assert_eq!(turns[0]["assistant"], "17*23 = 391");

    let (_, steps) = api
        .get(&format!(
            "/v1/interactions/{}/steps",
            reply["interaction_id"].as_str().unwrap()
        ))
        .await;
    let kinds: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["context", "think", "act", "observe", "think", "respond"]
    );
    assert_eq!(steps[2]["capability"], "calculator");
    assert_eq!(steps[2]["output"]["result"], 391);
}

/// Reads a server-sent event stream into (event, data) pairs until it ends.
async fn read_events(response: reqwest::Response) -> Vec<(String, Value)> {
    use eventsource_stream::Eventsource;
    let mut out = Vec::new();
    let mut stream = response.bytes_stream().eventsource();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        out.push((event.event, serde_json::from_str(&event.data).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_streams_as_server_sent_events() {
    let api = Api::start(1000).await;
    let session = api.session("ada").await;
    let response = api
        .http
        .post(format!("{}/v1/sessions/{session}/messages", api.base))
        .bearer_auth(&api.key)
        .header("accept", "text/event-stream")
        .json(&json!({ "text": "what is 12*12?" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = read_events(response).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"interaction"), "{names:?}");
    assert_eq!(names.last(), Some(&"reply"), "{names:?}");
    // Every step started before it ended, in order, and the act names its capability.
    let steps: Vec<(String, String)> = events
        .iter()
        .filter(|(n, _)| n == "step")
        .map(|(_, d)| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> =
        ["context", "think", "act", "observe", "think", "respond"]
            .iter()
            .flat_map(|k| {
                [
                    (k.to_string(), "started".to_owned()),
                    (k.to_string(), "succeeded".to_owned()),
                ]
            })
            .collect();
    assert_eq!(steps, expected);
    assert!(
        events
            .iter()
            .any(|(n, d)| n == "step" && d["kind"] == "act" && d["capability"] == "calculator")
    );
    // The tokens, in order, are the reply; they came before it.
    let tokens: String = events
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    let reply = &events.last().unwrap().1;
    assert_eq!(reply["text"], "12*12 = 144");
    assert_eq!(tokens, "12*12 = 144");
    assert!(
        events.iter().filter(|(n, _)| n == "token").count() >= 3,
        "not streamed in pieces"
    );

    // An error is an event too.
    let response = api
        .http
        .post(format!(
            "{}/v1/sessions/{session}/messages?stream=true",
            api.base
        ))
        .bearer_auth(&api.key)
        .json(&json!({ "text": " " }))
        .send()
        .await
        .unwrap();
    let events = read_events(response).await;
    assert_eq!(events.last().unwrap().0, "error");
    assert_eq!(events.last().unwrap().1["code"], "runtime.empty_message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_dispatch_report_cancel_and_follow_up() {
    let api = Api::start(1000).await;
    // A job run by the job worker; its follow-up reaches a live session stream.
    let (status, job) = api
        .post(
            "/v1/jobs",
            json!({ "user": "ada", "capability": "word_count", "input": { "text": "one two three" }, "id": "r1" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["job"]["id"].as_str().unwrap().to_owned();
    let session = job["job"]["session_id"].as_str().unwrap().to_owned();
    let done = api.job_in(&id, &["resolved"]).await;
    assert_eq!(done["job"]["result"]["words"], 3);
    // Dispatching again with the same id is the same job.
    let (_, again) = api
        .post(
            "/v1/jobs",
            json!({ "user": "ada", "capability": "word_count", "input": { "text": "one two three" }, "id": "r1" }),
        )
        .await;
    assert_eq!(again["job"]["id"].as_str(), Some(id.as_str()));
    // The follow-up is in the conversation's history.
    let history = loop {
        let (_, history) = api.get(&format!("/v1/sessions/{session}/messages")).await;
        if history.as_array().unwrap().len() >= 2 {
            break history;
        }
        let mut events = api.host.runtime().subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    };
    assert!(
        history[1]["assistant"]
            .as_str()
            .unwrap()
            .contains("resolved"),
        "{history}"
    );

    // Outside work: dispatched to a service that answers 202 and reports back
    // to the callback it was given.
    let response = api
        .http
        .get(format!("{}/v1/sessions/{session}/events", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    let mut live = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    let (_, outside) = api
        .post(
            "/v1/jobs",
            json!({ "user": "ada", "capability": "outside_work", "input": { "task": "audit" } }),
        )
        .await;
    let outside_id = outside["job"]["id"].as_str().unwrap().to_owned();
    api.job_in(&outside_id, &["in_progress"]).await;
    let (url, token) = {
        let calls = api.calls.lock().unwrap();
        let h = calls.last().unwrap();
        (
            h["x-thinklio-callback-url"].to_str().unwrap().to_owned(),
            h["x-thinklio-callback-token"].to_str().unwrap().to_owned(),
        )
    };
    assert_eq!(url, format!("{}/v1/jobs/{outside_id}/report", api.base));
    let report = json!({ "status": "resolved", "result": { "audit": "clean" } });
    let (status, err) = api
        .call(
            "POST",
            &format!("/v1/jobs/{outside_id}/report"),
            None,
            Some(report.clone()),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNAUTHORIZED, "auth.missing_key")
    );
    let (status, err) = api
        .call(
            "POST",
            &format!("/v1/jobs/{outside_id}/report"),
            Some(&api.key),
            Some(report.clone()),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::FORBIDDEN, "job.bad_token")
    );
    let (status, err) = api
        .call(
            "POST",
            &format!("/v1/jobs/{id}/report"),
            Some(&token),
            Some(report.clone()),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::FORBIDDEN, "job.bad_token"),
        "another job's token"
    );
    let (status, reported) = api
        .call(
            "POST",
            &url.replace(&api.base, ""),
            Some(&token),
            Some(report),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reported}");
    assert_eq!(reported["job"]["state"], "resolved");
    // The follow-up arrives on the session's live stream.
    let follow_up = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = live.next().await {
            let event = event.unwrap();
            if event.event == "reply"
                && event.data.contains(&format!("[job {outside_id} resolved]"))
            {
                return event.data;
            }
        }
        panic!("the stream ended");
    })
    .await
    .expect("no follow-up within 30 s");
    let follow_up: Value = serde_json::from_str(&follow_up).unwrap();
    let (_, history) = api.get(&format!("/v1/sessions/{session}/messages")).await;
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["interaction_id"] == follow_up["interaction_id"]),
        "the follow-up delivered live is in the history"
    );

    // Cancelling: only the account's own jobs, and not once ended.
    let (_, pending) = api
        .post(
            "/v1/jobs",
            json!({ "user": "ada", "capability": "outside_work", "input": { "task": "long" } }),
        )
        .await;
    let pending_id = pending["job"]["id"].as_str().unwrap().to_owned();
    let (status, err) = api
        .call(
            "POST",
            &format!("/v1/jobs/{pending_id}/cancel"),
            Some(&api.other_key),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::FORBIDDEN, "auth.wrong_account")
    );
    let (status, cancelled) = api
        .post(
            &format!("/v1/jobs/{pending_id}/cancel"),
            json!({ "reason": "no longer needed" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["job"]["state"], "cancelled");
    let (status, err) = api
        .post(&format!("/v1/jobs/{pending_id}/cancel"), json!({}))
        .await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "job.ended"));
    // Not a capability the API may dispatch.
    let (status, err) = api
        .post(
            "/v1/jobs",
            json!({ "user": "ada", "capability": "calculator", "input": { "expression": "1+1" } }),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "job.not_dispatched")
    );
    let (status, err) = api
        .get("/v1/jobs/01a21bb7-91bd-7224-bb75-a25dfcaec0c4")
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "job.not_found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knowledge_and_usage() {
    let api = Api::start(1000).await;
    let fact = json!({ "layer": "user", "user": "ada", "subject": "ada", "predicate": "lives in", "value": "Lisbon" });
    let (status, written) = api.post("/v1/facts", fact.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{written}");
    assert_eq!(written["outcome"], "added");
    let (_, again) = api.post("/v1/facts", fact).await;
    assert_eq!(again["outcome"], "duplicate");
    let (status, _) = api
        .post("/v1/facts", json!({ "layer": "account", "subject": "office", "predicate": "is in", "value": "Porto" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = api
        .post(
            "/v1/facts",
            json!({ "layer": "team", "subject": "x", "predicate": "y", "value": "z" }),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "fact.missing_owner")
    );

    let (_, found) = api
        .get("/v1/facts/search?user=ada&q=where%20does%20ada%20live&k=5")
        .await;
    let values: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["fact"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(values.first(), Some(&"Lisbon"), "{found}");
    // Bob sees the account's fact, not Ada's; the other account sees neither.
    let (_, bob) = api
        .get("/v1/facts/search?user=bob&q=lives%20in%20Lisbon&k=5")
        .await;
    assert!(!bob.to_string().contains("Lisbon"), "{bob}");
    let (_, theirs) = api
        .call(
            "GET",
            "/v1/facts/search?user=ada&q=lives%20in%20Lisbon%20office",
            Some(&api.other_key),
            None,
        )
        .await;
    assert_eq!(theirs.as_array().unwrap().len(), 0, "{theirs}");

    // Likes accumulate; an update replaces the fact it names, and only a
    // fact of the same owner in the key's account.
    let like = |v: &str| json!({ "layer": "user", "user": "ada", "subject": "ada", "predicate": "likes", "value": v });
    let (_, tea) = api.post("/v1/facts", like("tea")).await;
    let (_, jazz) = api.post("/v1/facts", like("jazz")).await;
    assert_eq!(
        (tea["outcome"].as_str(), jazz["outcome"].as_str()),
        (Some("added"), Some("added"))
    );
    let mut coffee = like("coffee");
    coffee["replaces"] = tea["fact"]["id"].clone();
    let (status, written) = api.post("/v1/facts", coffee.clone()).await;
    assert_eq!(
        (status, written["outcome"].as_str()),
        (StatusCode::CREATED, Some("superseded")),
        "{written}"
    );
    let (status, err) = api
        .call("POST", "/v1/facts", Some(&api.other_key), Some(coffee))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another account cannot name the fact: {err}"
    );
    let mut colour = json!({ "layer": "user", "user": "ada", "subject": "ada", "predicate": "favourite colour", "value": "red", "cardinality": "single" });
    api.post("/v1/facts", colour.clone()).await;
    colour["value"] = json!("blue");
    let (_, blue) = api.post("/v1/facts", colour).await;
    assert_eq!(blue["outcome"], "superseded", "{blue}");
    let (_, export) = api.get("/v1/users/ada/facts").await;
    let current: Vec<&str> = export["facts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["expired_at"].is_null())
        .map(|f| f["value"].as_str().unwrap())
        .collect();
    assert_eq!(current, vec!["Lisbon", "jazz", "coffee", "blue"]);
    let (_, export) = api.get("/v1/users/ada/facts").await;
    assert!(export.to_string().contains("Lisbon"));
    assert!(
        !export.to_string().contains("Porto"),
        "an export holds only the user's own facts"
    );
    let (status, deleted) = api
        .call("DELETE", "/v1/users/ada/facts", Some(&api.key), None)
        .await;
    assert_eq!(
        (status, deleted["deleted"].as_u64()),
        (StatusCode::OK, Some(6))
    );
    let (_, export) = api.get("/v1/users/ada/facts").await;
    assert!(!export.to_string().contains("Lisbon"));

    // Usage: Ada's message counts for Ada and the account, not for Bob.
    let session = api.session("ada").await;
    api.post(
        &format!("/v1/sessions/{session}/messages"),
        json!({ "text": "what is 2+2?" }),
    )
    .await;
    let (_, ada) = api.get("/v1/usage?user=ada").await;
    let (_, bob) = api.get("/v1/usage?user=bob").await;
    let (_, account) = api.get("/v1/usage").await;
    let (_, other) = api
        .call("GET", "/v1/usage", Some(&api.other_key), None)
        .await;
    assert_eq!(ada["calls"], 2, "two model calls: {ada}");
    assert!(ada["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(bob["calls"], 0);
    assert_eq!(account["calls"], ada["calls"]);
    assert_eq!(other["calls"], 0);
    // By agent: the assistant made them; another account sees none of it.
    let (status, by_agent) = api.get("/v1/usage/agents").await;
    assert_eq!(status, StatusCode::OK, "{by_agent}");
    assert_eq!(by_agent.as_array().unwrap().len(), 1, "{by_agent}");
    assert_eq!(by_agent[0]["agent"], "assistant");
    assert_eq!(by_agent[0]["calls"], account["calls"]);
    assert_eq!(by_agent[0]["cost_usd"], account["cost_usd"]);
    let (_, other) = api
        .call("GET", "/v1/usage/agents", Some(&api.other_key), None)
        .await;
    assert_eq!(other, json!([]));
}

/// The model of `careful` sessions: `remember X` proposes `remember(X)`;
/// a tool result is answered with what it said.
fn careful_model() -> thinklio_llm::ScriptedModel {
    use thinklio_core::Role;
    use thinklio_llm::ScriptedReply;
    thinklio_llm::ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        if last.role == Role::Tool {
            return ScriptedReply::text(format!("Noted: {}", last.content));
        }
        match last.content.strip_prefix("remember ") {
            Some(what) => {
                ScriptedReply::tool_call("r1", "remember", json!({ "text": what }).to_string())
            }
            None => ScriptedReply::text("ok"),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_interaction_is_cancelled_over_the_api() {
    let api = Api::start_with_model(
        thinklio_examples::http::HttpConfig::new("careful"),
        std::sync::Arc::new(careful_model()),
    )
    .await;
    let session = api.session("ada").await;
    let (_, reply) = api
        .post(
            &format!("/v1/sessions/{session}/messages"),
            json!({ "text": "remember the milk" }),
        )
        .await;
    let interaction = reply["interaction_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/interactions/{interaction}/cancel");
    let (status, err) = api.call("POST", &path, Some(&api.other_key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, body) = api.post(&path, json!({})).await;
    assert_eq!(
        (status, &body),
        (StatusCode::OK, &json!({ "cancelled": true }))
    );
    let (_, body) = api.post(&path, json!({})).await;
    assert_eq!(body, json!({ "cancelled": false }), "it had ended");
    let (_, steps) = api
        .get(&format!("/v1/interactions/{interaction}/steps"))
        .await;
    let last = steps.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["error"]["code"], "interaction.cancelled", "{last}");
    assert!(
        api.remembered.lock().unwrap().is_empty(),
        "the call never ran"
    );
    let (status, _) = api
        .post(
            "/v1/interactions/01a21bb7-91bd-7224-bb75-a25dfcaec0c4/cancel",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structured_answer_comes_back_as_json_beside_its_text() {
    let model = thinklio_llm::ScriptedModel::new([
        thinklio_llm::ScriptedReply::text("positive"),
        thinklio_llm::ScriptedReply::text(r#"{"label":"positive"}"#),
    ]);
    let api = Api::start_with_model(
        thinklio_examples::http::HttpConfig::new("judge"),
        std::sync::Arc::new(model),
    )
    .await;
    let session = api.session("ada").await;
    let (status, reply) = api
        .post(
            &format!("/v1/sessions/{session}/messages"),
            json!({ "text": "I love this" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["answer"], json!({ "label": "positive" }), "{reply}");
    assert_eq!(reply["text"], r#"{"label":"positive"}"#);
    assert_eq!(
        reply["steps"], 4,
        "context, an invalid answer, the valid one, respond"
    );
    let (_, doc) = api.call("GET", "/openapi.json", None, None).await;
    assert!(
        doc["components"]["schemas"]["ReplyView"]["properties"]
            .get("answer")
            .is_some(),
        "the OpenAPI document describes `answer`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_chooses_its_approval_mode_over_the_api() {
    let api = Api::start_with_model(
        thinklio_examples::http::HttpConfig::new("careful"),
        std::sync::Arc::new(careful_model()),
    )
    .await;
    let session = api.session("ada").await;
    let path = format!("/v1/sessions/{session}/approval_mode");
    let put = |key: &str, body: Value| {
        let (api, path, key) = (&api, path.clone(), key.to_owned());
        async move { api.call("PUT", &path, Some(&key), Some(body)).await }
    };
    let (status, view) = put(&api.key, json!({ "mode": "observe" })).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["approval_mode"], "observe");
    let (_, reply) = api
        .post(
            &format!("/v1/sessions/{session}/messages"),
            json!({ "text": "remember the milk" }),
        )
        .await;
    assert!(reply.get("waiting").is_none(), "nothing waits: {reply}");
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("approval.observe_only"),
        "{reply}"
    );
    assert!(
        api.remembered.lock().unwrap().is_empty(),
        "observed, not run"
    );

    let (status, err) = put(&api.key, json!({ "mode": "reckless" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, err) = put(&api.other_key, json!({ "mode": null })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, view) = put(&api.key, json!({ "mode": null })).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["approval_mode"], Value::Null);
    // Back to the agent's draft: the call waits.
    let (_, reply) = api
        .post(
            &format!("/v1/sessions/{session}/messages"),
            json!({ "text": "remember the eggs" }),
        )
        .await;
    assert_eq!(reply["waiting"].as_array().unwrap().len(), 1, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_listed_and_decided_over_the_api() {
    let api = Api::start_with_model(
        thinklio_examples::http::HttpConfig::new("careful"),
        std::sync::Arc::new(careful_model()),
    )
    .await;
    let session = api.session("ada").await;
    // The reply of a message whose call waits says which steps wait; the
    // stream shows the approval.
    let response = api
        .http
        .post(format!("{}/v1/sessions/{session}/messages", api.base))
        .bearer_auth(&api.key)
        .header("accept", "text/event-stream")
        .json(&json!({ "text": "remember the milk" }))
        .send()
        .await
        .unwrap();
    let events = read_events(response).await;
    let approval = events
        .iter()
        .find(|(n, _)| n == "approval")
        .map(|(_, d)| d.clone())
        .expect("an approval event on the stream");
    assert_eq!(approval["state"], "requested");
    assert_eq!(approval["capability"], "remember");
    assert_eq!(approval["arguments"], json!({ "text": "the milk" }));
    let reply = &events.last().unwrap().1;
    assert_eq!(reply["waiting"][0], approval["step_id"], "{reply}");
    assert!(api.remembered.lock().unwrap().is_empty());

    let (status, pending) = api.get(&format!("/v1/approvals?session={session}")).await;
    assert_eq!(status, StatusCode::OK, "{pending}");
    let step = pending[0]["step_id"].as_str().unwrap().to_owned();
    assert_eq!(step, approval["step_id"].as_str().unwrap());
    let (_, all) = api.get("/v1/approvals").await;
    assert_eq!(all.as_array().unwrap().len(), 1);

    // Another account's key sees and decides nothing.
    let (status, err) = api
        .call(
            "GET",
            &format!("/v1/approvals?session={session}"),
            Some(&api.other_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, err) = api
        .call(
            "POST",
            &format!("/v1/approvals/{step}"),
            Some(&api.other_key),
            Some(json!({ "decision": "approve" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (_, theirs) = api
        .call("GET", "/v1/approvals", Some(&api.other_key), None)
        .await;
    assert_eq!(theirs, json!([]));

    // Edited arguments are checked; then the call runs as edited, once.
    let (status, err) = api
        .post(
            &format!("/v1/approvals/{step}"),
            json!({ "decision": "edit", "arguments": { "txt": 1 } }),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::BAD_REQUEST, "approval.invalid_arguments")
    );
    let (status, decided) = api
        .post(
            &format!("/v1/approvals/{step}"),
            json!({ "decision": "edit", "arguments": { "text": "the oat milk" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["decision"]["decision"], "edit");
    assert_eq!(decided["channel"], "http");
    assert_eq!(*api.remembered.lock().unwrap(), ["the oat milk"]);
    let (status, err) = api
        .post(
            &format!("/v1/approvals/{step}"),
            json!({ "decision": "reject" }),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "store.conflict")
    );
    let (_, history) = api.get(&format!("/v1/sessions/{session}/messages")).await;
    assert!(
        history[0]["assistant"]
            .as_str()
            .unwrap()
            .contains("the oat milk"),
        "{history}"
    );

    // A rejection: the call never runs, and the model is told the reason.
    let (_, reply) = api
        .post(
            &format!("/v1/sessions/{session}/messages"),
            json!({ "text": "remember the eggs" }),
        )
        .await;
    let step = reply["waiting"][0].as_str().unwrap().to_owned();
    let (status, _) = api
        .post(
            &format!("/v1/approvals/{step}"),
            json!({ "decision": "reject", "reason": "we have eggs" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(*api.remembered.lock().unwrap(), ["the oat milk"]);
    let (_, history) = api.get(&format!("/v1/sessions/{session}/messages")).await;
    assert!(
        history[1]["assistant"]
            .as_str()
            .unwrap()
            .contains("we have eggs"),
        "{history}"
    );
    let (status, err) = api
        .post(
            "/v1/approvals/01a21bb7-91bd-7224-bb75-a25dfcaec0c4",
            json!({ "decision": "approve" }),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "approval.not_found")
    );
}

/// A 4 × 3 PNG.
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAADCAIAAAA7ljmRAAAAEElEQVR4nGM4kWIERww4OQBHKhBpqqu7qgAAAABJRU5ErkJggg==";

/// Describes the images of the message it answers.
fn seeing_model() -> thinklio_llm::ScriptedModel {
    thinklio_llm::ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        let seen: Vec<String> = last
            .images
            .iter()
            .map(|i| match &i.source {
                thinklio_core::ImageSource::Bytes(b) => {
                    format!("{} of {} bytes", i.media_type().unwrap(), b.len())
                }
                thinklio_core::ImageSource::Url(u) => u.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        thinklio_llm::ScriptedReply::text(format!("{:?} [{}]", last.content, seen.join(", ")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_sent_as_base64_json_or_as_a_form() {
    let api = Api::start_with_model(
        thinklio_examples::http::HttpConfig::new("assistant"),
        std::sync::Arc::new(seeing_model()),
    )
    .await;
    let session = api.session("ada").await;
    let path = format!("/v1/sessions/{session}/messages");

    // JSON: base64 bytes (with a media type) and a URL.
    let (status, reply) = api
        .post(
            &path,
            json!({ "text": "what is this?", "images": [
                { "data": PNG_BASE64, "media_type": "image/png" },
                { "url": "https://example.com/ant.jpg" },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        reply["text"],
        r#""what is this?" [image/png of 73 bytes, https://example.com/ant.jpg]"#
    );

    // A form: `text`, `id` and an `image` file part, as a browser sends it.
    let png = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(PNG_BASE64)
            .unwrap()
    };
    let boundary = "----thinklio7MA4YWxkTrZu0gW";
    let form = |media_type: &str, image: &[u8]| {
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nand this?\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\nm-1\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"dot.png\"\r\n\
             Content-Type: {media_type}\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(image);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        body
    };
    let send_form = |body: Vec<u8>| {
        api.http
            .post(format!("{}{path}", api.base))
            .bearer_auth(&api.key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
    };
    let response = send_form(form("image/png", &png)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["text"], r#""and this?" [image/png of 73 bytes]"#);
    // The same form again (its `id`) is the same reply, not a second ask.
    let again: Value = send_form(form("image/png", &png))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["interaction_id"], reply["interaction_id"]);

    // The history lists each turn's images by id; the same bytes are one image.
    let (_, history) = api.get(&path).await;
    let ids: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["images"])
        .collect();
    assert_eq!(ids[0].as_array().unwrap().len(), 2);
    assert_eq!(ids[1][0], ids[0][0]);

    // Refused: typed errors, nothing recorded.
    let refusals = [
        (
            json!({ "text": "x", "images": [{ "data": "%%%" }] }),
            StatusCode::BAD_REQUEST,
            "request.bad_image",
        ),
        (
            json!({ "text": "x", "images": [{ "data": PNG_BASE64, "url": "https://a.example/b.png" }] }),
            StatusCode::BAD_REQUEST,
            "request.bad_image",
        ),
        (
            json!({ "text": "x", "images": [{ "data": "aGVsbG8=" }] }),
            StatusCode::BAD_REQUEST,
            "runtime.image_invalid",
        ),
        (
            json!({ "text": "x", "images": [{ "data": PNG_BASE64, "media_type": "image/gif" }] }),
            StatusCode::BAD_REQUEST,
            "runtime.image_invalid",
        ),
        (
            json!({ "text": "x", "images": [{ "url": "ftp://example.com/a.png" }] }),
            StatusCode::BAD_REQUEST,
            "runtime.image_invalid",
        ),
        (
            json!({ "text": "x", "images": [{ "data": PNG_BASE64, "colour": "red" }] }),
            StatusCode::BAD_REQUEST,
            "request.bad_json",
        ),
    ];
    for (body, status, expected) in refusals {
        let (got, error) = api.post(&path, body.clone()).await;
        assert_eq!((got, code(&error)), (status, expected), "{body} → {error}");
    }
    let response = send_form(form("image/png", b"not a png")).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = send_form(b"--nonsense".to_vec()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), "request.bad_form", "{body}");
    let (_, history) = api.get(&path).await;
    assert_eq!(
        history.as_array().unwrap().len(),
        2,
        "nothing refused was recorded"
    );

    // The OpenAPI document describes both bodies.
    let (_, doc) = api.call("GET", "/openapi.json", None, None).await;
    let content = &doc["paths"]["/v1/sessions/{id}/messages"]["post"]["requestBody"]["content"];
    assert!(content.get("application/json").is_some(), "{content}");
    assert!(content.get("multipart/form-data").is_some(), "{content}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_created_changed_paused_and_archived_over_the_api() {
    let api = Api::start(1000).await;
    let (status, created) = api
        .post(
            "/v1/agents",
            json!({ "id": "helper", "model": "offline", "system_prompt": "You help.",
                    "capabilities": ["calculator"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (created["version"].clone(), created["state"].clone()),
        (json!(1), json!("active"))
    );
    assert_eq!(
        created["definition"]["approval_mode"], "draft",
        "an agent made over HTTP asks before it acts unless told otherwise"
    );
    // The same id again is a conflict; a bad definition is the request's fault.
    let (status, error) = api
        .post("/v1/agents", json!({ "id": "helper", "model": "offline" }))
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, "store.conflict")
    );
    let (status, error) = api
        .post(
            "/v1/agents",
            json!({ "id": "hot", "model": "offline", "temperature": 7.0 }),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, "request.bad_agent"),
        "{error}"
    );
    let (status, error) = api.post("/v1/agents", json!({ "model": "offline" })).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, "request.bad_agent"),
        "{error}"
    );
    // Above the account's trust ceiling (standard unless set).
    let (status, error) = api
        .post(
            "/v1/agents",
            json!({ "id": "root", "model": "offline", "trust_level": "privileged" }),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::FORBIDDEN, "directory.beyond_policy"),
        "{error}"
    );
    // An agent registered in code is read-only.
    let (status, error) = api
        .post(
            "/v1/agents",
            json!({ "id": "assistant", "model": "offline" }),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::FORBIDDEN, "directory.host_agent"),
        "{error}"
    );

    // A chat picks it and talks to it.
    let (status, session) = api
        .post("/v1/sessions", json!({ "user": "ada", "agent": "helper" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(session["agent"], "helper");
    let messages = format!("/v1/sessions/{}/messages", session["id"].as_str().unwrap());
    let (status, reply) = api.post(&messages, json!({ "text": "hello" })).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // Changed against the version read; a stale change is refused.
    let (status, changed) = api
        .call(
            "PUT",
            "/v1/agents/helper",
            Some(&api.key),
            Some(json!({ "version": 1, "definition": { "model": "offline", "system_prompt": "You help more." } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["version"], 2);
    let (status, error) = api
        .call(
            "PUT",
            "/v1/agents/helper",
            Some(&api.key),
            Some(json!({ "version": 1, "definition": { "model": "offline" } })),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, "store.conflict")
    );
    let (_, versions) = api.get("/v1/agents/helper/versions").await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert_eq!(versions[1]["definition"]["system_prompt"], "You help more.");
    let (_, listed) = api.get("/v1/agents").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (_, read) = api.get("/v1/agents/helper").await;
    assert_eq!(read["version"], 2);
    let (status, graph) = api.get("/v1/agents/helper/graph").await;
    assert_eq!(status, StatusCode::OK, "{graph}");
    assert_eq!(
        graph["agents"],
        json!([{ "id": "helper", "max_delegation_depth": 3 }])
    );
    assert_eq!(graph["cycles"], json!([]));
    let response = api
        .http
        .get(format!(
            "{}/v1/agents/helper/graph?format=mermaid",
            api.base
        ))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/vnd.mermaid")
    );
    assert!(response.text().await.unwrap().starts_with("flowchart LR"));
    let (status, error) = api.get("/v1/agents/helper/graph?format=png").await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, "request.bad_query")
    );

    // Another account's key: refused, and sees none of it.
    for (method, path, body) in [
        ("GET", "/v1/agents/helper", None),
        ("GET", "/v1/agents/helper/versions", None),
        ("GET", "/v1/agents/helper/graph", None),
        (
            "PUT",
            "/v1/agents/helper",
            Some(json!({ "version": 2, "definition": { "model": "offline" } })),
        ),
        ("POST", "/v1/agents/helper/pause", None),
        ("POST", "/v1/agents/helper/archive", None),
        (
            "POST",
            "/v1/agents",
            Some(json!({ "id": "helper", "model": "offline" })),
        ),
    ] {
        let (status, error) = api.call(method, path, Some(&api.other_key), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {error}");
        assert_eq!(code(&error), "directory.foreign_agent", "{method} {path}");
    }
    let (_, theirs) = api
        .call("GET", "/v1/agents", Some(&api.other_key), None)
        .await;
    assert_eq!(theirs, json!([]));
    let (status, _) = api
        .call(
            "POST",
            "/v1/sessions",
            Some(&api.other_key),
            Some(json!({ "user": "eve", "agent": "helper" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A chat key reads and never writes.
    let (_, chat) = api.post("/v1/keys", json!({ "label": "page" })).await;
    let chat = chat["secret"].as_str().unwrap().to_owned();
    let (status, _) = api
        .call("GET", "/v1/agents/helper", Some(&chat), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for (method, path, body) in [
        (
            "POST",
            "/v1/agents",
            Some(json!({ "id": "mine", "model": "offline" })),
        ),
        (
            "PUT",
            "/v1/agents/helper",
            Some(json!({ "version": 2, "definition": { "model": "offline" } })),
        ),
        ("POST", "/v1/agents/helper/pause", None),
    ] {
        let (status, error) = api.call(method, path, Some(&chat), body).await;
        assert_eq!(
            (status, code(&error)),
            (StatusCode::FORBIDDEN, "auth.scope"),
            "{method} {path}"
        );
    }

    // Paused: messages are refused until resumed; archived: for good.
    let (status, paused) = api.post("/v1/agents/helper/pause", json!({})).await;
    assert_eq!(
        (status, paused["state"].clone()),
        (StatusCode::OK, json!("paused"))
    );
    let (status, error) = api.post(&messages, json!({ "text": "anyone?" })).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, "agent.paused")
    );
    let (_, resumed) = api.post("/v1/agents/helper/resume", json!({})).await;
    assert_eq!(resumed["state"], "active");
    let (status, _) = api.post(&messages, json!({ "text": "back" })).await;
    assert_eq!(status, StatusCode::OK);
    let (_, archived) = api.post("/v1/agents/helper/archive", json!({})).await;
    assert_eq!(archived["state"], "archived");
    let (status, error) = api.post(&messages, json!({ "text": "hello?" })).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, "agent.archived")
    );
    let (status, error) = api.post("/v1/agents/helper/resume", json!({})).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, "store.conflict")
    );
    let (status, _) = api.get("/v1/agents/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Delegations are part of a definition; one that closes a circle is a
    // conflict that names it.
    let (status, _) = api
        .post("/v1/agents", json!({ "id": "x", "model": "offline" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, y) = api
        .post(
            "/v1/agents",
            json!({ "id": "y", "model": "offline",
                    "delegates": [{ "agent": "x", "name": "ask_x", "capabilities": [], "max_depth": 1 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{y}");
    assert_eq!(y["definition"]["capabilities"], json!(["ask_x"]));
    let (_, graph) = api.get("/v1/agents/y/graph").await;
    assert_eq!(
        graph["edges"],
        json!([{ "from": "y", "capability": "ask_x", "to": "x" }])
    );
    let (status, error) = api
        .call(
            "PUT",
            "/v1/agents/x",
            Some(&api.key),
            Some(json!({ "version": 1, "definition": { "model": "offline",
                "delegates": [{ "agent": "y", "name": "ask_y" }] } })),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, "delegation.cycle"),
        "{error}"
    );
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("x → y → x") || message.contains("y → x → y"),
        "{message}"
    );
    let (status, error) = api
        .post(
            "/v1/agents",
            json!({ "id": "z", "model": "offline", "delegates": [{ "agent": "nobody", "name": "ask_nobody" }] }),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::NOT_FOUND, "runtime.unknown_agent"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_make_agents_that_follow_them_and_clones_record_their_parent_over_the_api() {
    let api = Api::start(1000).await;
    let template = json!({
        "id": "desk",
        "description": "Answers the help desk.",
        "definition": { "model": "offline", "system_prompt": "You help.", "approval_mode": "autopilot" },
        "knowledge": ["The desk opens at 9."],
    });
    let (status, created) = api.post("/v1/templates", template.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["template"]["version"], 1);
    assert_eq!(created["template"]["definition"]["id"], "desk");
    assert_eq!(created["sync"]["updated"], json!([]));
    let (status, error) = api.post("/v1/templates", template.clone()).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, "store.conflict")
    );
    // Bad templates and overrides are the request's fault; a trust level
    // above the account's ceiling is refused.
    let (status, error) = api
        .post(
            "/v1/templates",
            json!({ "id": "", "definition": { "model": "offline" } }),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, "request.bad_template"),
        "{error}"
    );
    let (status, error) = api
        .post(
            "/v1/templates",
            json!({ "id": "root", "definition": { "model": "offline", "trust_level": "privileged" } }),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::FORBIDDEN, "directory.beyond_policy"),
        "{error}"
    );
    let (status, error) = api
        .post(
            "/v1/templates/desk/instantiate",
            json!({ "agent": "x", "overrides": { "modle": "typo" } }),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, "request.bad_overrides"),
        "{error}"
    );

    // Two agents: one as the template has it, for every user; one changed.
    let (status, plain) = api
        .post(
            "/v1/templates/desk/instantiate",
            json!({ "agent": "desk-1", "scope": { "kind": "account" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert_eq!(plain["origin"]["kind"], "template");
    assert_eq!(plain["origin"]["template"], "desk");
    assert_eq!(plain["template_version"], 1);
    let (status, custom) = api
        .post(
            "/v1/templates/desk/instantiate",
            json!({ "agent": "desk-2", "scope": { "kind": "user", "id": "ada" },
                    "overrides": { "system_prompt": "You help in French." } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{custom}");
    assert_eq!(custom["definition"]["system_prompt"], "You help in French.");
    let (_, session) = api
        .post("/v1/sessions", json!({ "user": "ada", "agent": "desk-1" }))
        .await;
    let messages = format!("/v1/sessions/{}/messages", session["id"].as_str().unwrap());
    let (status, reply) = api.post(&messages, json!({ "text": "hello" })).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // desk-2 is edited; the template changes: desk-1 follows, desk-2 is
    // reported as diverged.
    let (status, _) = api
        .call(
            "PUT",
            "/v1/agents/desk-2",
            Some(&api.key),
            Some(json!({ "version": 1, "definition": { "model": "offline", "system_prompt": "Mine now." } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, changed) = api
        .call(
            "PUT",
            "/v1/templates/desk",
            Some(&api.key),
            Some(json!({ "version": 1, "definition": { "model": "offline", "system_prompt": "You help well." } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["sync"]["version"], 2);
    assert_eq!(changed["sync"]["updated"], json!(["desk-1"]));
    assert_eq!(changed["sync"]["diverged"], json!(["desk-2"]));
    let (_, desk1) = api.get("/v1/agents/desk-1").await;
    assert_eq!(desk1["definition"]["system_prompt"], "You help well.");
    assert_eq!(desk1["template_version"], 2);
    let (status, again) = api.post("/v1/templates/desk/sync", json!({})).await;
    assert_eq!(
        (status, again["updated"].clone()),
        (StatusCode::OK, json!(["desk-1"]))
    );
    let (_, listed) = api.get("/v1/templates").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (_, read) = api.get("/v1/templates/desk").await;
    assert_eq!(
        (read["version"].clone(), read["knowledge"].clone()),
        (json!(2), json!([]))
    );

    // A clone records its parent.
    let (status, cloned) = api
        .post(
            "/v1/agents/desk-1/clone",
            json!({ "id": "desk-3", "knowledge": true }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cloned}");
    assert_eq!(
        cloned["agent"]["origin"],
        json!({ "kind": "clone", "parent": "desk-1", "parent_version": 2 })
    );
    assert_eq!(cloned["facts"], 1, "the seed fact came along");
    let (status, error) = api
        .post("/v1/agents/desk-1/clone", json!({ "id": "desk-3" }))
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, "store.conflict")
    );

    // Another account's key: refused, and sees none of it.
    for (method, path, body) in [
        ("GET", "/v1/templates/desk", None),
        (
            "PUT",
            "/v1/templates/desk",
            Some(json!({ "version": 2, "definition": { "model": "offline" } })),
        ),
        ("DELETE", "/v1/templates/desk", None),
        (
            "POST",
            "/v1/templates/desk/instantiate",
            Some(json!({ "agent": "stolen" })),
        ),
        ("POST", "/v1/templates/desk/sync", None),
        ("POST", "/v1/templates", Some(template.clone())),
    ] {
        let (status, error) = api.call(method, path, Some(&api.other_key), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {error}");
        assert_eq!(
            code(&error),
            "directory.foreign_template",
            "{method} {path}"
        );
    }
    let (status, error) = api
        .call(
            "POST",
            "/v1/agents/desk-1/clone",
            Some(&api.other_key),
            Some(json!({ "id": "theirs" })),
        )
        .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::FORBIDDEN, "directory.foreign_agent")
    );
    let (_, theirs) = api
        .call("GET", "/v1/templates", Some(&api.other_key), None)
        .await;
    assert_eq!(theirs, json!([]));
    // A chat key reads and never writes.
    let (_, chat) = api.post("/v1/keys", json!({ "label": "page" })).await;
    let chat = chat["secret"].as_str().unwrap().to_owned();
    let (status, _) = api
        .call("GET", "/v1/templates/desk", Some(&chat), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for (method, path, body) in [
        (
            "POST",
            "/v1/templates",
            Some(json!({ "id": "mine", "definition": { "model": "offline" } })),
        ),
        (
            "POST",
            "/v1/templates/desk/instantiate",
            Some(json!({ "agent": "mine" })),
        ),
        ("POST", "/v1/templates/desk/sync", None),
        ("DELETE", "/v1/templates/desk", None),
        (
            "POST",
            "/v1/agents/desk-1/clone",
            Some(json!({ "id": "mine" })),
        ),
    ] {
        let (status, error) = api.call(method, path, Some(&chat), body).await;
        assert_eq!(
            (status, code(&error)),
            (StatusCode::FORBIDDEN, "auth.scope"),
            "{method} {path}"
        );
    }

    // Deleted: gone, its agents stay.
    let (status, _) = api
        .call("DELETE", "/v1/templates/desk", Some(&api.key), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get("/v1/templates/desk").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.post(&messages, json!({ "text": "still here?" })).await;
    assert_eq!(status, StatusCode::OK);
}
