//! Spans leave over OTLP: a conversation's steps reach an OTLP/HTTP receiver
//! running in this process, decoded from the protobuf the exporter sends.
#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use thinklio_core::{AgentDefinition, Principal, Runtime};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use tracing_subscriber::layer::SubscriberExt;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Add {
    a: i64,
    b: i64,
}

/// What the receiver got: each request's content type and decoded body.
type Received = Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>;

async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new().route(
        "/v1/traces",
        post({
            let received = received.clone();
            move |headers: HeaderMap, body: Bytes| async move {
                let kind = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        received.lock().unwrap().push((kind, request));
                        StatusCode::OK
                    }
                    Err(_) => StatusCode::BAD_REQUEST,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(n)) => n.to_string(),
        Some(Value::DoubleValue(n)) => n.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversations_steps_reach_an_otlp_receiver_with_gen_ai_attributes() {
    let (url, received) = receiver().await;
    let (layer, traces) =
        thinklio_examples::traces::layer(&format!("{url}/"), "thinklio-test").unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("call_9", "add", r#"{"a": 1, "b": 2}"#),
        ScriptedReply::text("3"),
    ])
    .named("gpt-4o-mini-2024-07-18");
    let runtime = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("s.db")).await.unwrap())
        .model(model)
        .capability(
            thinklio_core::FunctionCapability::builder("add", "Adds.")
                .side_effect(thinklio_core::SideEffect::ReadOnly)
                .handler(|x: Add| async move { Ok::<_, String>(x.a + x.b) }),
        )
        .agent(AgentDefinition::new("assistant", "gpt-4o-mini").capabilities(["add"]))
        .build()
        .unwrap();
    let session = runtime
        .open_session(Principal::local(), "assistant", "t", None)
        .await
        .unwrap();
    let reply = runtime.send(session.id, "1+2?").await.unwrap();
    assert_eq!(reply.text, "3");
    // The batch goes on the exporter's own thread; flushing waits for it.
    tokio::task::spawn_blocking(move || traces.shutdown())
        .await
        .unwrap();

    let received = received.lock().unwrap();
    assert!(!received.is_empty(), "nothing reached the receiver");
    assert!(
        received
            .iter()
            .all(|(kind, _)| kind == "application/x-protobuf")
    );
    let mut spans = Vec::new();
    for (_, request) in received.iter() {
        for resource in &request.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .map(|a| text(&a.value));
            assert_eq!(service.as_deref(), Some("thinklio-test"));
            for scope in &resource.scope_spans {
                for span in &scope.spans {
                    let attributes: BTreeMap<String, String> = span
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(&a.value)))
                        .collect();
                    spans.push((span.name.clone(), span.trace_id.clone(), attributes));
                }
            }
        }
    }
    let steps: Vec<&(String, Vec<u8>, BTreeMap<String, String>)> = spans
        .iter()
        .filter(|(_, _, a)| a.contains_key("thinklio.step.kind"))
        .collect();
    let kinds: Vec<&str> = steps
        .iter()
        .map(|(_, _, a)| a["thinklio.step.kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        vec!["context", "think", "act", "observe", "think", "respond"],
        "{spans:?}"
    );
    let (name, _, think) = steps[1];
    assert_eq!(name, "chat assistant");
    assert_eq!(think["gen_ai.operation.name"], "chat");
    assert_eq!(think["gen_ai.request.model"], "gpt-4o-mini");
    assert_eq!(think["gen_ai.response.model"], "gpt-4o-mini-2024-07-18");
    assert!(think["gen_ai.usage.input_tokens"].parse::<u64>().unwrap() > 0);
    assert_eq!(think["gen_ai.conversation.id"], session.id.to_string());
    let (name, _, act) = steps[2];
    assert_eq!(name, "execute_tool assistant");
    assert_eq!(act["gen_ai.tool.name"], "add");
    assert_eq!(act["gen_ai.tool.call.id"], "call_9");
    // Nothing of what the user said travels in a span.
    for (_, _, attributes) in &spans {
        assert!(
            !attributes.values().any(|v| v.contains("1+2?")),
            "{attributes:?}"
        );
    }
}

#[test]
fn an_endpoint_that_is_not_a_url_is_refused() {
    let refused =
        thinklio_examples::traces::layer::<tracing_subscriber::Registry>("collector:4318", "t");
    assert!(matches!(
        refused,
        Err(thinklio_examples::traces::TraceError::Endpoint(_))
    ));
}
