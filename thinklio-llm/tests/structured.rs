//! Schema-constrained output, as each provider's API reference asks for it:
//! `response_format: json_schema` on OpenAI-compatible APIs, a forced tool
//! call on Anthropic, whose input becomes the answer's text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use serde_json::{Value, json};
use thinklio_core::{ChatMessage, ChatModel, ChatRequest, FinishReason, OutputSchema};
use thinklio_llm::{Anthropic, ApiKey, OpenAiCompatible};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn request(model: &str) -> ChatRequest {
    let mut r = ChatRequest::new(
        model,
        vec![
            ChatMessage::system("Extract."),
            ChatMessage::user("I live in Lyon."),
        ],
    );
    r.output_schema = Some(OutputSchema {
        name: "record_facts".into(),
        schema: json!({ "type": "object", "properties": { "facts": { "type": "array" } }, "required": ["facts"] }),
    });
    r
}

#[tokio::test]
async fn openai_compatible_asks_for_a_json_schema_response_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{ "index": 0, "finish_reason": "stop",
                "message": { "role": "assistant", "content": "{\"facts\":[]}" } }],
            "usage": { "prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25 }
        })))
        .mount(&server)
        .await;
    let model = OpenAiCompatible::new(format!("{}/v1", server.uri()), None);
    let answer = model.chat(&request("gpt-4o-mini")).await.unwrap();
    assert_eq!(answer.message.content, "{\"facts\":[]}");
    let body: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(
        body["response_format"]["json_schema"]["name"],
        "record_facts"
    );
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["required"],
        json!(["facts"])
    );
}

#[tokio::test]
async fn anthropic_forces_the_output_tool_and_returns_its_input_as_text() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{ "type": "tool_use", "id": "toolu_1", "name": "record_facts",
                          "input": { "facts": [{ "subject": "user", "predicate": "lives in", "value": "Lyon" }] } }],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": { "input_tokens": 30, "output_tokens": 12 }
        })))
        .mount(&server)
        .await;
    let model = Anthropic::new(server.uri(), ApiKey::new("sk-ant-test"));
    let answer = model.chat(&request("claude-sonnet-4-5")).await.unwrap();
    let parsed: Value = serde_json::from_str(&answer.message.content).unwrap();
    assert_eq!(parsed["facts"][0]["value"], "Lyon");
    assert!(answer.message.tool_calls.is_empty());
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let body: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(
        body["tool_choice"],
        json!({ "type": "tool", "name": "record_facts" })
    );
    assert_eq!(body["tools"][0]["name"], "record_facts");
    assert_eq!(
        body["tools"][0]["input_schema"]["required"],
        json!(["facts"])
    );
}

#[tokio::test]
async fn anthropic_streams_the_output_tool_as_the_answers_text() {
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"record_facts\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"facts\\\": \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"[]}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(stream, "text/event-stream"))
        .mount(&server)
        .await;
    let model = Anthropic::new(server.uri(), ApiKey::new("sk-ant-test"));
    let mut events = model
        .chat_stream(&request("claude-sonnet-4-5"))
        .await
        .unwrap();
    let mut answer = None;
    while let Some(event) = futures::StreamExt::next(&mut events).await {
        if let thinklio_core::StreamEvent::Done(response) = event.unwrap() {
            answer = Some(response);
        }
    }
    let answer = answer.expect("the whole answer");
    assert_eq!(answer.message.content, "{\"facts\": []}");
    assert!(answer.message.tool_calls.is_empty(), "not a call to run");
    assert_eq!(answer.finish_reason, FinishReason::Stop);
}
