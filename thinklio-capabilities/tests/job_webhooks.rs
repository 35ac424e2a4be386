//! Webhooks and jobs: a webhook dispatched as a job gets the job's callback
//! and reports back; webhook observers get signed notices, retried with
//! backoff until they are taken. Against a local HTTP server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use serde_json::{Value, json};
use thinklio_capabilities::{
    SIGNATURE_HEADER, SignedNoticeWebhook, TIMESTAMP_HEADER, WebhookCapability, WebhookSecret, sign,
};
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "observer-secret";

/// Calls the first tool for a user message, acknowledges a tool result,
/// and answers a follow-up with the job report it carries.
fn model() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        if let Some(report) = r
            .messages
            .iter()
            .find(|m| m.role == Role::System && m.content.starts_with("Deferred work"))
        {
            return ScriptedReply::text(format!("Follow-up: {}", report.content));
        }
        match last.role {
            Role::User => ScriptedReply::tool_call(
                "c1",
                r.tools[0].name.clone(),
                r#"{"title": "quarterly report"}"#,
            ),
            _ => ScriptedReply::text(format!("Under way: {}", last.content)),
        }
    })
}

async fn runtime(
    dir: &tempfile::TempDir,
    clock: ManualClock,
    capability: WebhookCapability,
    observer: Option<String>,
) -> Runtime {
    let mut builder = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("j.db")).await.unwrap())
        .model(model())
        .clock(clock)
        .capability(capability)
        .agent(AgentDefinition::new("a", "m").capabilities(["write_report"]))
        .job_callbacks(JobCallbacks::new(
            "https://thinklio.example/v1/jobs/{job}/report",
            "cb-secret",
        ))
        .notice_webhook(SignedNoticeWebhook::new(WebhookSecret::new(SECRET)));
    if let Some(url) = observer {
        builder = builder.job_observer(ObserverKind::Webhook { url });
    }
    builder.build().unwrap()
}

fn report_writer(server: &MockServer) -> WebhookCapability {
    WebhookCapability::new(
        "write_report",
        "Writes a report in the background.",
        format!("{}/hooks/report", server.uri()),
        WebhookSecret::new("capability-secret"),
    )
    .parameters(json!({ "type": "object", "properties": { "title": { "type": "string" } } }))
    .side_effect(SideEffect::Idempotent)
    .default_mode(StepMode::Deferred)
}

#[tokio::test]
async fn a_webhook_dispatched_as_a_job_gets_its_callback_and_reports_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/report"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let rt = runtime(&dir, clock, report_writer(&server), None).await;
    let session = rt
        .open_session(Principal::local(), "a", "chat", None)
        .await
        .unwrap();
    let reply = rt.send(session.id, "write the report").await.unwrap();
    assert!(
        reply.text.contains("runs in the background"),
        "{}",
        reply.text
    );
    rt.run_due_jobs().await.unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({ "title": "quarterly report" }),
        "the body is the arguments"
    );
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let job: JobId = header("x-thinklio-job").parse().unwrap();
    assert_eq!(header("x-thinklio-idempotency-key"), format!("job:{job}"));
    assert_eq!(
        header("x-thinklio-callback-url"),
        format!("https://thinklio.example/v1/jobs/{job}/report")
    );
    let signed: i64 = header(TIMESTAMP_HEADER).parse().unwrap();
    assert_eq!(
        header(SIGNATURE_HEADER),
        sign(
            &WebhookSecret::new("capability-secret"),
            signed,
            &request.body
        )
    );
    assert_eq!(
        rt.jobs().get(Principal::local(), job).await.unwrap().state,
        JobState::InProgress
    );

    // The receiver reports back with the token it was given.
    let token = header("x-thinklio-callback-token");
    rt.jobs()
        .report(
            job,
            &token,
            JobReport::Resolved {
                result: json!({ "pages": 12 }),
                context: Some(json!({ "title": "quarterly report" })),
            },
        )
        .await
        .unwrap();
    rt.run_due_jobs().await.unwrap();
    let last = rt
        .sessions()
        .interactions(Principal::local(), session.id)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(last.job_id, Some(job));
    let text = rt
        .sessions()
        .reply(Principal::local(), last.id)
        .await
        .unwrap()
        .unwrap()
        .text;
    assert!(text.contains(r#"{"pages":12}"#), "{text}");
}

#[tokio::test]
async fn a_webhook_observer_that_fails_twice_gets_the_notice_on_the_third_try() {
    let hooks = MockServer::start().await;
    let observer = MockServer::start().await;
    // The report is written at once (200 with a body), so the job resolves
    // when dispatched.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "pages": 3 })))
        .mount(&hooks)
        .await;
    // The observer fails the `resolved` notice twice, then takes it.
    Mock::given(method("POST"))
        .and(body_partial_json(json!({ "notice": "resolved" })))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&observer)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&observer)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let rt = runtime(
        &dir,
        clock.clone(),
        report_writer(&hooks),
        Some(format!("{}/notices", observer.uri())),
    )
    .await;
    let session = rt
        .open_session(Principal::local(), "a", "chat", None)
        .await
        .unwrap();
    rt.send(session.id, "write the report").await.unwrap();

    let first = rt.run_due_jobs().await.unwrap();
    assert_eq!(first.dispatched, 1);
    assert_eq!(
        (first.notified, first.notice_failures),
        (3, 1),
        "the follow-up observer's two notices and the webhook's `dispatched` taken; its `resolved` refused"
    );
    let pending = SqliteStore::open(dir.path().join("j.db"))
        .await
        .unwrap()
        .due_notifications(Timestamp::from_millis(i64::MAX), 10)
        .await
        .unwrap();
    let resolved = pending
        .iter()
        .find(|n| n.notice == Notice::Resolved)
        .unwrap()
        .clone();
    assert_eq!(resolved.attempts, 1);
    assert_eq!(
        resolved.last_error.as_deref(),
        Some("the observer webhook answered HTTP 503")
    );
    assert!(
        resolved.due_at > clock.now(),
        "the retry waits for its backoff"
    );
    // Nothing is sent again before the retry is due.
    assert_eq!(rt.run_due_jobs().await.unwrap().notice_failures, 0);

    clock.set(resolved.due_at);
    let second = rt.run_due_jobs().await.unwrap();
    assert_eq!((second.notified, second.notice_failures), (0, 1));
    let retried = SqliteStore::open(dir.path().join("j.db"))
        .await
        .unwrap()
        .due_notifications(Timestamp::from_millis(i64::MAX), 10)
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.id == resolved.id)
        .unwrap();
    assert_eq!(retried.attempts, 2);
    assert!(
        retried.due_at.since(clock.now())
            >= resolved.due_at.since(Timestamp::from_millis(1_000_000)),
        "the second wait is not shorter than the first (equal jitter over a doubling ceiling)"
    );

    clock.set(retried.due_at);
    let third = rt.run_due_jobs().await.unwrap();
    assert_eq!((third.notified, third.notice_failures), (1, 0));
    assert!(
        SqliteStore::open(dir.path().join("j.db"))
            .await
            .unwrap()
            .due_notifications(Timestamp::from_millis(i64::MAX), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The observer got: dispatched once, resolved three times with one id,
    // every request signed over its exact body.
    let requests = observer.received_requests().await.unwrap();
    assert_eq!(requests.len(), 4);
    let mut notices = Vec::new();
    for r in &requests {
        let signed: i64 = r.headers[TIMESTAMP_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            r.headers.get(SIGNATURE_HEADER).unwrap().to_str().unwrap(),
            sign(&WebhookSecret::new(SECRET), signed, &r.body)
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        let id = r
            .headers
            .get("x-thinklio-notification-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(body["notification_id"], id.as_str());
        notices.push((body["notice"].as_str().unwrap().to_owned(), id));
    }
    assert_eq!(notices[0].0, "dispatched");
    assert!(
        notices[1..]
            .iter()
            .all(|(n, id)| n == "resolved" && *id == resolved.id.to_string())
    );
    let body: Value = serde_json::from_slice(&requests[3].body).unwrap();
    assert_eq!(body["job"]["result"], json!({ "pages": 3 }));
    assert_eq!(body["job"]["state"], "resolved");
}
