//! The OpenAI-compatible provider against a local server replaying payloads in
//! the shape of the chat-completions API reference, checking both what it
//! sends and what it makes of the answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use futures::StreamExt;
use serde_json::{Value, json};
use thinklio_core::{
    ChatMessage, ChatModel, ChatRequest, FinishReason, StreamEvent, ToolCall, ToolDefinition,
};
use thinklio_llm::{ApiKey, OpenAiCompatible};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn request() -> ChatRequest {
    let mut r = ChatRequest::new(
        "gpt-4o-mini",
        vec![
            ChatMessage::system("You are terse."),
            ChatMessage::user("What's the weather in Boston?"),
            ChatMessage::assistant_with_tools(
                "",
                vec![ToolCall::new(
                    "call_prev",
                    "get_weather",
                    r#"{"location":"Paris"}"#,
                )],
            ),
            ChatMessage::tool_result("call_prev", "18C, clear"),
        ],
    );
    r.tools = vec![ToolDefinition {
        name: "get_weather".into(),
        description: "Current weather for a city.".into(),
        parameters: json!({
            "type": "object",
            "properties": { "location": { "type": "string" } },
            "required": ["location"]
        }),
    }];
    r.max_tokens = Some(256);
    r
}

/// A tool-call completion as the API reference shows it.
const TOOL_CALL_COMPLETION: &str = r#"{
  "id": "chatcmpl-abc123",
  "object": "chat.completion",
  "created": 1699896916,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": null,
        "tool_calls": [
          {
            "id": "call_abc123",
            "type": "function",
            "function": {
              "name": "get_weather",
              "arguments": "{\n\"location\": \"Boston, MA\"\n}"
            }
          }
        ],
        "refusal": null
      },
      "logprobs": null,
      "finish_reason": "tool_calls"
    }
  ],
  "usage": {
    "prompt_tokens": 82,
    "completion_tokens": 17,
    "total_tokens": 99,
    "completion_tokens_details": { "reasoning_tokens": 0 }
  },
  "system_fingerprint": "fp_44709d6fcb"
}"#;

/// A streamed answer with text and a tool call whose arguments arrive in
/// pieces, followed by the usage chunk that `include_usage` asks for.
const TOOL_CALL_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Let me check.\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_DdmO9pD3xa9XTPNJ32zg2hcA\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"\"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"location\\\": \\\"Paris\"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\", France\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":85,\"completion_tokens\":20,\"total_tokens\":105}}\n\n",
    "data: [DONE]\n\n",
);

async fn server_answering(body: &str, content_type: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body.to_owned(), content_type))
        .mount(&server)
        .await;
    server
}

async fn sent_body(server: &MockServer) -> Value {
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    requests[0].body_json().unwrap()
}

fn provider(server: &MockServer) -> OpenAiCompatible {
    OpenAiCompatible::new(format!("{}/v1", server.uri()), Some(ApiKey::new("sk-test")))
}

#[tokio::test]
async fn sends_the_conversation_and_tools_in_chat_completions_shape() {
    let server = server_answering(TOOL_CALL_COMPLETION, "application/json").await;
    provider(&server).chat(&request()).await.unwrap();
    let body = sent_body(&server).await;
    assert_eq!(
        body,
        json!({
            "model": "gpt-4o-mini",
            "max_tokens": 256,
            "messages": [
                { "role": "system", "content": "You are terse." },
                { "role": "user", "content": "What's the weather in Boston?" },
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_prev", "type": "function",
                      "function": { "name": "get_weather", "arguments": "{\"location\":\"Paris\"}" } }
                ]},
                { "role": "tool", "tool_call_id": "call_prev", "content": "18C, clear" }
            ],
            "tools": [{ "type": "function", "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": { "type": "object", "properties": { "location": { "type": "string" } }, "required": ["location"] }
            }}]
        })
    );
}

#[tokio::test]
async fn reads_tool_calls_and_usage() {
    let server = server_answering(TOOL_CALL_COMPLETION, "application/json").await;
    let response = provider(&server).chat(&request()).await.unwrap();
    assert_eq!(response.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(response.usage.input_tokens, 82);
    assert_eq!(response.usage.output_tokens, 17);
    assert_eq!(
        response.message.tool_calls,
        vec![ToolCall::new(
            "call_abc123",
            "get_weather",
            "{\n\"location\": \"Boston, MA\"\n}"
        )]
    );
}

#[tokio::test]
async fn streams_text_and_tool_call_deltas_then_the_whole_answer() {
    let server = server_answering(TOOL_CALL_STREAM, "text/event-stream").await;
    let events: Vec<StreamEvent> = provider(&server)
        .chat_stream(&request())
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    let body = sent_body(&server).await;
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["stream_options"], json!({ "include_usage": true }));
    assert_eq!(events[0], StreamEvent::TextDelta("Let me check.".into()));
    assert!(events.contains(&StreamEvent::ToolCallStart {
        index: 0,
        id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
        name: "get_weather".into()
    }));
    let deltas: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallDelta { arguments, .. } => Some(arguments.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, r#"{"location": "Paris, France"}"#);
    let Some(StreamEvent::Done(done)) = events.last() else {
        panic!("the stream ends with Done: {events:?}");
    };
    assert_eq!(done.message.content, "Let me check.");
    assert_eq!(
        done.message.tool_calls[0].arguments,
        r#"{"location": "Paris, France"}"#
    );
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        (done.usage.input_tokens, done.usage.output_tokens),
        (85, 20)
    );
}

#[tokio::test]
async fn malformed_tool_call_arguments_pass_through_untouched() {
    // The model cut its arguments short: the closing brace is missing.
    let body = TOOL_CALL_COMPLETION.replace(r#"\"Boston, MA\"\n}"#, r#"\"Boston, MA\"\n"#);
    assert_ne!(body, TOOL_CALL_COMPLETION);
    let server = server_answering(&body, "application/json").await;
    let response = provider(&server).chat(&request()).await.unwrap();
    let arguments = &response.message.tool_calls[0].arguments;
    assert_eq!(arguments, "{\n\"location\": \"Boston, MA\"\n");
    assert!(serde_json::from_str::<Value>(arguments).is_err());
}

#[tokio::test]
async fn a_garbled_body_is_a_typed_error_not_a_panic() {
    let server = server_answering("{\"choices\": [", "application/json").await;
    let err = provider(&server).chat(&request()).await.unwrap_err();
    assert_eq!(err.code(), "model.malformed_response", "{err}");
}

#[tokio::test]
async fn sends_sampling_parameters_as_the_api_names_them() {
    let server = server_answering(TOOL_CALL_COMPLETION, "application/json").await;
    let mut r = request();
    r.temperature = Some(0.2);
    r.top_p = Some(0.9);
    r.stop = vec!["\nUser:".into(), "END".into()];
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
    assert_eq!(body["stop"], json!(["\nUser:", "END"]));
    assert_eq!(body["max_tokens"], 256);
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
async fn sends_images_as_chat_completions_documents_them() {
    use thinklio_core::{ChatImage, ImageFormat};
    let server = server_answering(TOOL_CALL_COMPLETION, "application/json").await;
    let r = ChatRequest::new(
        "gpt-4o-mini",
        vec![
            ChatMessage::user("Hello"),
            ChatMessage::assistant("Hi."),
            ChatMessage::user_with_images(
                "What is in these pictures?",
                vec![
                    ChatImage::bytes(ImageFormat::Png, png()),
                    ChatImage::url("https://upload.example.org/ant.jpg"),
                ],
            ),
        ],
    );
    provider(&server).chat(&r).await.unwrap();
    let body = sent_body(&server).await;
    // A message without images keeps its content a string.
    assert_eq!(
        body["messages"][0],
        json!({ "role": "user", "content": "Hello" })
    );
    // With images, content parts as the vision guide shows them: the
    // text, then `image_url` parts; bytes as a base64 `data:` URL.
    assert_eq!(
        body["messages"][2],
        json!({ "role": "user", "content": [
            { "type": "text", "text": "What is in these pictures?" },
            { "type": "image_url", "image_url": { "url": format!("data:image/png;base64,{PNG_BASE64}") } },
            { "type": "image_url", "image_url": { "url": "https://upload.example.org/ant.jpg" } },
        ] })
    );
}
