//! Whatever a provider answers — any status, any `Retry-After`, any body,
//! a real answer with parts replaced, a stream of frames cut anywhere — the
//! providers return an answer or a typed error, never a panic. A local
//! server plays each case to the real clients; each property runs
//! `thinklio_core::fuzz::CASES` cases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use thinklio_core::fuzz;
use thinklio_core::{ChatMessage, ChatModel, ChatRequest, ToolDefinition};
use thinklio_llm::{Anthropic, ApiKey, HttpRetry, OpenAiCompatible};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One answer of the server, as a case sets it.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    retry_after: String,
    content_type: &'static str,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Slot(Arc<Mutex<Option<Answer>>>);

impl Respond for Slot {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let answer = self.0.lock().unwrap().clone().unwrap();
        let mut t =
            ResponseTemplate::new(answer.status).set_body_raw(answer.body, answer.content_type);
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&answer.retry_after) {
            t = t.insert_header("retry-after", v);
        }
        t
    }
}

fn request() -> ChatRequest {
    let mut r = ChatRequest::new("gpt-4o-mini", vec![ChatMessage::user("weather in Paris?")]);
    r.tools = vec![ToolDefinition {
        name: "get_weather".into(),
        description: "Weather.".into(),
        parameters: json!({ "type": "object" }),
    }];
    r
}

fn openai_completion() -> Value {
    json!({
        "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1699896916,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": null,
            "tool_calls": [{ "id": "call_abc123", "type": "function",
                "function": { "name": "get_weather", "arguments": "{\"location\": \"Paris\"}" } }],
            "refusal": null }, "logprobs": null, "finish_reason": "tool_calls" }],
        "usage": { "prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99 }
    })
}

fn openai_chunk() -> Value {
    json!({ "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{ "index": 0, "delta": { "tool_calls": [{ "index": 0, "id": "call_1",
            "type": "function", "function": { "name": "get_weather", "arguments": "{\"lo" } }] },
            "logprobs": null, "finish_reason": null }],
        "usage": null })
}

fn anthropic_message() -> Value {
    json!({
        "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            { "type": "text", "text": "Let me check." },
            { "type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": { "location": "Paris" } }
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": { "input_tokens": 384, "output_tokens": 95 }
    })
}

fn anthropic_events() -> Vec<Value> {
    vec![
        json!({ "type": "message_start", "message": { "id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null,
            "usage": { "input_tokens": 472, "output_tokens": 2 } } }),
        json!({ "type": "content_block_start", "index": 1, "content_block": { "type": "tool_use",
            "id": "toolu_1", "name": "get_weather", "input": {} } }),
        json!({ "type": "content_block_delta", "index": 1, "delta": { "type": "input_json_delta",
            "partial_json": "{\"location\": \"Pa" } }),
        json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "Okay" } }),
        json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use", "stop_sequence": null },
            "usage": { "output_tokens": 89 } }),
        json!({ "type": "message_stop" }),
    ]
}

/// A body: any text, any JSON, or the real payload with parts replaced.
fn body(real: Value) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        fuzz::text().prop_map(String::into_bytes),
        fuzz::json().prop_map(|v| v.to_string().into_bytes()),
        fuzz::mutated(real).prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// A stream: frames of real events with parts replaced, any JSON or text,
/// `[DONE]`, with event names, cut at any byte.
fn stream(real: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    let frame = prop_oneof![
        prop::sample::select(real)
            .prop_flat_map(fuzz::mutated)
            .prop_map(|v| v.to_string()),
        fuzz::json().prop_map(|v| v.to_string()),
        fuzz::text(),
        Just("[DONE]".to_owned()),
    ];
    let named = (prop::option::of("[a-z_]{1,20}"), frame);
    (
        prop::collection::vec(named, 0..8),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(frames, cut)| {
            let mut out = String::new();
            for (event, data) in frames {
                if let Some(e) = event {
                    out.push_str(&format!("event: {e}\n"));
                }
                out.push_str(&format!("data: {data}\n\n"));
            }
            let mut bytes = out.into_bytes();
            if !bytes.is_empty() {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
}

fn answers(real: Value, events: Vec<Value>) -> impl Strategy<Value = Answer> {
    let status = prop::sample::select(vec![200u16, 200, 200, 400, 401, 404, 429, 500, 503]);
    let plain =
        (status.clone(), fuzz::text(), body(real)).prop_map(|(status, retry_after, body)| Answer {
            status,
            retry_after,
            content_type: "application/json",
            body,
        });
    let streamed = (status, stream(events)).prop_map(|(status, body)| Answer {
        status,
        retry_after: String::new(),
        content_type: "text/event-stream",
        body,
    });
    prop_oneof![plain, streamed]
}

/// Plays every case to the model `make` builds for the server's address,
/// whole and streamed.
fn never_panics(
    make: impl Fn(&str) -> Arc<dyn ChatModel>,
    strategy: impl Strategy<Value = Answer>,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let slot = Slot::default();
    let server = rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::method("POST"))
            .respond_with(slot.clone())
            .mount(&server)
            .await;
        server
    });
    let model = make(&server.uri());
    proptest!(fuzz::config(), |(answer in strategy)| {
        *slot.0.lock().unwrap() = Some(answer);
        rt.block_on(async {
            let _ = model.chat(&request()).await;
            if let Ok(mut stream) = model.chat_stream(&request()).await {
                while stream.next().await.is_some() {}
            }
        });
    });
}

#[test]
fn any_openai_compatible_answer_is_an_answer_or_a_typed_error() {
    let chunks = vec![openai_chunk(), openai_completion()];
    never_panics(
        |uri| {
            Arc::new(
                OpenAiCompatible::new(format!("{uri}/v1"), Some(ApiKey::new("k")))
                    .retry(HttpRetry::none()),
            )
        },
        answers(openai_completion(), chunks),
    );
}

#[test]
fn any_anthropic_answer_is_an_answer_or_a_typed_error() {
    never_panics(
        |uri| Arc::new(Anthropic::new(uri, ApiKey::new("k")).retry(HttpRetry::none())),
        answers(anthropic_message(), anthropic_events()),
    );
}
