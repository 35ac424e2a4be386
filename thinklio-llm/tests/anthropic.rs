//! The Anthropic provider against a local server replaying payloads in the
//! shape of the Messages API reference, checking both directions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use futures::StreamExt;
use serde_json::{Value, json};
use thinklio_core::{
    ChatMessage, ChatModel, ChatRequest, FinishReason, StreamEvent, ToolCall, ToolDefinition,
};
use thinklio_llm::{Anthropic, ApiKey};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn request() -> ChatRequest {
    let mut r = ChatRequest::new(
        "claude-sonnet-4-5",
        vec![
            ChatMessage::system("You are terse."),
            ChatMessage::user("Weather in SF and NYC?"),
            ChatMessage::assistant_with_tools(
                "Checking both.",
                vec![
                    ToolCall::new("toolu_1", "get_weather", r#"{"location":"San Francisco"}"#),
                    ToolCall::new("toolu_2", "get_weather", r#"{"location":"New York"#),
                ],
            ),
            ChatMessage::tool_result("toolu_1", "15C"),
            ChatMessage::tool_result("toolu_2", "Error: arguments are not valid JSON"),
        ],
    );
    r.tools = vec![ToolDefinition {
        name: "get_weather".into(),
        description: "Current weather.".into(),
        parameters: json!({ "type": "object", "properties": { "location": { "type": "string" } } }),
    }];
    r
}

/// A tool-use message as the API reference shows it.
const TOOL_USE_MESSAGE: &str = r#"{
  "id": "msg_01Aq9w938a90dw8q",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5-20250929",
  "content": [
    { "type": "text", "text": "I'll check the current weather in San Francisco for you." },
    { "type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
      "input": { "location": "San Francisco, CA", "unit": "celsius" } }
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": { "input_tokens": 384, "output_tokens": 95 }
}"#;

/// A streamed tool use, event by event as the streaming guide shows it
/// (including a `ping`).
const TOOL_USE_STREAM: &str = "event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\", let's check.\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"San Francisco, CA\\\"}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":1}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

async fn server_answering(body: &str, content_type: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "sk-ant-test"))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body.to_owned(), content_type))
        .mount(&server)
        .await;
    server
}

fn provider(server: &MockServer) -> Anthropic {
    Anthropic::new(server.uri(), ApiKey::new("sk-ant-test"))
}

async fn sent_body(server: &MockServer) -> Value {
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    requests[0].body_json().unwrap()
}

#[tokio::test]
async fn sends_system_on_top_and_tool_results_as_one_user_turn() {
    let server = server_answering(TOOL_USE_MESSAGE, "application/json").await;
    provider(&server).chat(&request()).await.unwrap();
    assert_eq!(
        sent_body(&server).await,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 4096,
            "system": "You are terse.",
            "messages": [
                { "role": "user", "content": [{ "type": "text", "text": "Weather in SF and NYC?" }] },
                { "role": "assistant", "content": [
                    { "type": "text", "text": "Checking both." },
                    { "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "location": "San Francisco" } },
                    { "type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {} }
                ]},
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "toolu_1", "content": "15C" },
                    { "type": "tool_result", "tool_use_id": "toolu_2", "content": "Error: arguments are not valid JSON" }
                ]}
            ],
            "tools": [{ "name": "get_weather", "description": "Current weather.",
                        "input_schema": { "type": "object", "properties": { "location": { "type": "string" } } } }]
        })
    );
}

#[tokio::test]
async fn reads_text_tool_use_and_usage() {
    let server = server_answering(TOOL_USE_MESSAGE, "application/json").await;
    let r = provider(&server).chat(&request()).await.unwrap();
    assert_eq!(r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        r.message.content,
        "I'll check the current weather in San Francisco for you."
    );
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (384, 95));
    let call = &r.message.tool_calls[0];
    assert_eq!(call.id, "toolu_01A09q90qw90lq917835lq9");
    let args: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(
        args,
        json!({ "location": "San Francisco, CA", "unit": "celsius" })
    );
}

#[tokio::test]
async fn streams_text_and_tool_input_then_the_whole_answer() {
    let server = server_answering(TOOL_USE_STREAM, "text/event-stream").await;
    let events: Vec<StreamEvent> = provider(&server)
        .chat_stream(&request())
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(sent_body(&server).await["stream"], json!(true));
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Okay, let's check.");
    assert!(events.contains(&StreamEvent::ToolCallStart {
        index: 1,
        id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
        name: "get_weather".into()
    }));
    let Some(StreamEvent::Done(done)) = events.last() else {
        panic!("the stream ends with Done: {events:?}");
    };
    assert_eq!(
        done.message.tool_calls[0].arguments,
        r#"{"location": "San Francisco, CA"}"#
    );
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        (done.usage.input_tokens, done.usage.output_tokens),
        (472, 89)
    );
}

#[tokio::test]
async fn an_error_event_in_the_stream_is_a_typed_error() {
    let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n\
                event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let server = server_answering(body, "text/event-stream").await;
    let results: Vec<_> = provider(&server)
        .chat_stream(&request())
        .await
        .unwrap()
        .collect()
        .await;
    let err = results.into_iter().find_map(Result::err).expect("an error");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("Overloaded"));
}

#[tokio::test]
async fn sends_sampling_parameters_as_the_api_names_them() {
    let server = server_answering(TOOL_USE_MESSAGE, "application/json").await;
    let mut r = request();
    r.temperature = Some(0.2);
    r.top_p = Some(0.9);
    r.stop = vec!["\nHuman:".into()];
    provider(&server).chat(&r).await.unwrap();
    let body = sent_body(&server).await;
    assert_eq!(
        body["temperature"].as_f64().map(|t| (t * 100.0).round()),
        Some(20.0)
    );
    assert_eq!(
        body["top_p"].as_f64().map(|p| (p * 100.0).round()),
        Some(90.0)
    );
    assert_eq!(
        body["stop_sequences"],
        json!(["\nHuman:"]),
        "Anthropic's name for stop"
    );
    assert!(body.get("stop").is_none());
}

/// A 4 × 3 PNG, and its base64 as the request must carry it.
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAADCAIAAAA7ljmRAAAAEElEQVR4nGM4kWIERww4OQBHKhBpqqu7qgAAAABJRU5ErkJggg==";

fn png() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(PNG_BASE64)
        .unwrap()
}

#[tokio::test]
async fn sends_images_as_the_messages_api_documents_them() {
    use thinklio_core::{ChatImage, ImageFormat};
    let server = server_answering(TOOL_USE_MESSAGE, "application/json").await;
    let r = ChatRequest::new(
        "claude-sonnet-4-5",
        vec![
            ChatMessage::user_with_images(
                "What is in these pictures?",
                vec![
                    ChatImage::bytes(ImageFormat::Png, png()),
                    ChatImage::url("https://upload.example.org/ant.jpg"),
                ],
            ),
            ChatMessage::assistant("An orange square and an ant."),
            // A photo sent without a caption: no empty text block, which
            // the API refuses.
            ChatMessage::user_with_images("", vec![ChatImage::bytes(ImageFormat::Png, png())]),
        ],
    );
    provider(&server).chat(&r).await.unwrap();
    let body = sent_body(&server).await;
    // The shapes of the Messages API's vision guide: images as `image`
    // blocks (base64 with their media type, or a URL), before the text.
    assert_eq!(
        body["messages"][0],
        json!({ "role": "user", "content": [
            { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": PNG_BASE64 } },
            { "type": "image", "source": { "type": "url", "url": "https://upload.example.org/ant.jpg" } },
            { "type": "text", "text": "What is in these pictures?" },
        ] })
    );
    assert_eq!(
        body["messages"][2],
        json!({ "role": "user", "content": [
            { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": PNG_BASE64 } },
        ] })
    );
}
