//! The Anthropic Messages API.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use thinklio_core::{
    ChatMessage, ChatModel, ChatRequest, ChatResponse, ChatStream, FinishReason, ImageSource,
    ModelError, Role, StreamEvent, TokenUsage, ToolCall,
};

use crate::http::{self, Endpoint, HttpRetry};
use crate::secret::ApiKey;

/// The `anthropic-version` header this provider speaks.
const API_VERSION: &str = "2023-06-01";

/// Output tokens asked for when the agent sets no limit (the API requires one).
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A provider speaking the Anthropic Messages API.
///
/// ```
/// use thinklio_llm::{Anthropic, ApiKey};
/// let claude = Anthropic::new("https://api.anthropic.com", ApiKey::new("sk-ant-..."));
/// # let _ = claude;
/// ```
#[derive(Debug, Clone)]
pub struct Anthropic {
    endpoint: Endpoint,
    api_key: ApiKey,
}

impl Anthropic {
    /// A provider at `base_url` (without `/v1`).
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> Self {
        Self {
            endpoint: Endpoint::new("anthropic", base_url.into()),
            api_key,
        }
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: HttpRetry) -> Self {
        self.endpoint.retry = retry;
        self
    }

    /// Sets how long to wait for the next bytes of an answer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.set_timeout(timeout);
        self
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let mut body = json!({
            "model": request.model,
            "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "messages": messages_json(&request.messages),
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.parameters }))
                .collect();
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(p) = request.top_p {
            body["top_p"] = json!(p);
        }
        if !request.stop.is_empty() {
            body["stop_sequences"] = json!(request.stop);
        }
        if let Some(out) = &request.output_schema {
            // Anthropic constrains output through a tool the model must call;
            // `chat` turns that call back into the answer's text.
            let tool = json!({
                "name": out.name,
                "description": "Record the answer in this structure.",
                "input_schema": out.schema,
            });
            match body["tools"].as_array_mut() {
                // With tools of its own, the model must call one of them
                // or the output tool (its answer): `any`, not one tool.
                Some(tools) => {
                    tools.push(tool);
                    body["tool_choice"] = json!({ "type": "any" });
                }
                None => {
                    body["tools"] = json!([tool]);
                    body["tool_choice"] = json!({ "type": "tool", "name": out.name });
                }
            }
        }
        if stream {
            body["stream"] = json!(true);
        }
        body
    }

    async fn post(&self, body: Value) -> Result<reqwest::Response, ModelError> {
        let headers = [
            (
                reqwest::header::HeaderName::from_static("x-api-key"),
                http::secret_header(self.api_key.expose().to_owned())?,
            ),
            (
                reqwest::header::HeaderName::from_static("anthropic-version"),
                reqwest::header::HeaderValue::from_static(API_VERSION),
            ),
        ];
        self.endpoint.post("v1/messages", &body, &headers).await
    }
}

/// Messages in Anthropic's shape: system messages go to the top-level
/// `system`; tool results are user content blocks; consecutive messages of
/// one role are merged, since the API wants roles to alternate.
fn messages_json(messages: &[ChatMessage]) -> Vec<Value> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for m in messages {
        let (role, blocks) = match m.role {
            Role::System => continue,
            Role::User => {
                // Images first, as Anthropic advises, then the text (an
                // empty text block is refused, so none when there is none).
                let mut blocks = Vec::with_capacity(m.images.len() + 1);
                for image in &m.images {
                    let source = match (&image.source, image.source.base64()) {
                        (_, Some(data)) => json!({
                            "type": "base64",
                            "media_type": image.media_type().unwrap_or_else(|| "image/png".to_owned()),
                            "data": data,
                        }),
                        (ImageSource::Url(url), None) => json!({ "type": "url", "url": url }),
                        (_, None) => continue,
                    };
                    blocks.push(json!({ "type": "image", "source": source }));
                }
                if !m.content.is_empty() || blocks.is_empty() {
                    blocks.push(json!({ "type": "text", "text": m.content }));
                }
                ("user", blocks)
            }
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id,
                    "content": m.content,
                })],
            ),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({ "type": "text", "text": m.content }));
                }
                for c in &m.tool_calls {
                    // The model's arguments may be malformed JSON (the harness
                    // told it so); the API needs an object, so send `{}` then.
                    let input = serde_json::from_str::<Value>(&c.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(
                        json!({ "type": "tool_use", "id": c.id, "name": c.name, "input": input }),
                    );
                }
                if blocks.is_empty() {
                    blocks.push(json!({ "type": "text", "text": "" }));
                }
                ("assistant", blocks)
            }
        };
        match out.last_mut() {
            Some((last, existing)) if last == role => existing.extend(blocks),
            _ => out.push((role.to_owned(), blocks)),
        }
    }
    out.into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect()
}

#[derive(Deserialize)]
struct Message {
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Usage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

fn finish_reason(s: Option<&str>) -> FinishReason {
    match s {
        Some("end_turn") | Some("stop_sequence") | None => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_owned()),
    }
}

#[async_trait]
impl ChatModel for Anthropic {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let response = self.post(self.body(request, false)).await?;
        let text = self.endpoint.text(response).await?;
        let message: Message = serde_json::from_str(&text)
            .map_err(|e| ModelError::MalformedResponse(format!("message: {e}")))?;
        let mut content = String::new();
        let mut calls = Vec::new();
        for block in message.content {
            match block {
                Block::Text { text } => content.push_str(&text),
                Block::ToolUse { id, name, input } => {
                    if request
                        .output_schema
                        .as_ref()
                        .is_some_and(|out| out.name == name)
                    {
                        // The forced output tool: its input is the answer.
                        content = input.to_string();
                    } else {
                        calls.push(ToolCall::new(id, name, input.to_string()))
                    }
                }
                Block::Other => {}
            }
        }
        let finish = if request.output_schema.is_some() && calls.is_empty() {
            FinishReason::Stop
        } else {
            finish_reason(message.stop_reason.as_deref())
        };
        Ok(ChatResponse {
            model: message.model.unwrap_or_else(|| request.model.clone()),
            message: ChatMessage::assistant_with_tools(content, calls),
            usage: TokenUsage::new(message.usage.input_tokens, message.usage.output_tokens),
            finish_reason: finish,
        })
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        let response = self.post(self.body(request, true)).await?;
        let assembler = Assembler {
            model: request.model.clone(),
            output_tool: request.output_schema.as_ref().map(|o| o.name.clone()),
            ..Assembler::default()
        };
        Ok(http::assemble(http::sse(response), assembler).boxed())
    }
}

/// Assembles a streamed message from its events.
#[derive(Default)]
struct Assembler {
    model: String,
    /// The output tool of a schema-constrained answer: its call is the
    /// answer's text, not a tool call.
    output_tool: Option<String>,
    text: String,
    /// Tool calls by content-block index.
    calls: BTreeMap<usize, ToolCall>,
    stop_reason: Option<String>,
    usage: Usage,
}

impl http::StreamAssembler for Assembler {
    fn feed(
        &mut self,
        _event: &str,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) -> Result<bool, ModelError> {
        let v: Value = serde_json::from_str(data)
            .map_err(|e| ModelError::MalformedResponse(format!("stream event: {e}")))?;
        let index = v["index"]
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or(0);
        match v["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let m = &v["message"];
                if let Some(model) = m["model"].as_str() {
                    self.model = model.to_owned();
                }
                self.usage.input_tokens = m["usage"]["input_tokens"].as_u64().unwrap_or(0);
                self.usage.output_tokens = m["usage"]["output_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    let id = block["id"].as_str().unwrap_or_default().to_owned();
                    let name = block["name"].as_str().unwrap_or_default().to_owned();
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: id.clone(),
                        name: name.clone(),
                    });
                    self.calls.insert(index, ToolCall::new(id, name, ""));
                } else if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                    self.text.push_str(text);
                    out.push(StreamEvent::TextDelta(text.to_owned()));
                }
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                match delta["type"].as_str().unwrap_or_default() {
                    "text_delta" => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        self.text.push_str(text);
                        out.push(StreamEvent::TextDelta(text.to_owned()));
                    }
                    "input_json_delta" => {
                        let part = delta["partial_json"].as_str().unwrap_or_default();
                        if let Some(call) = self.calls.get_mut(&index) {
                            call.arguments.push_str(part);
                        }
                        if !part.is_empty() {
                            out.push(StreamEvent::ToolCallDelta {
                                index,
                                arguments: part.to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = v["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_owned());
                }
                if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                    self.usage.output_tokens = n;
                }
                if let Some(n) = v["usage"]["input_tokens"].as_u64() {
                    self.usage.input_tokens = n;
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let e = &v["error"];
                return Err(ModelError::Http {
                    // An error inside a stream has no HTTP status of its own;
                    // `overloaded_error` is what 529 means outside a stream.
                    status: if e["type"] == "overloaded_error" {
                        529
                    } else {
                        500
                    },
                    headers: Vec::new(),
                    message: e["message"].as_str().unwrap_or("stream error").to_owned(),
                });
            }
            _ => {}
        }
        Ok(false)
    }

    fn finish(self) -> ChatResponse {
        let mut text = self.text;
        let mut calls = Vec::new();
        for mut call in self.calls.into_values() {
            // A tool with no arguments streams no JSON at all.
            if call.arguments.is_empty() {
                call.arguments = "{}".into();
            }
            if self.output_tool.as_deref() == Some(call.name.as_str()) {
                // The output tool: its input is the answer.
                text = call.arguments;
            } else {
                calls.push(call);
            }
        }
        let finish = if self.output_tool.is_some() && calls.is_empty() {
            FinishReason::Stop
        } else {
            finish_reason(self.stop_reason.as_deref())
        };
        ChatResponse {
            model: self.model,
            message: ChatMessage::assistant_with_tools(text, calls),
            usage: TokenUsage::new(self.usage.input_tokens, self.usage.output_tokens),
            finish_reason: finish,
        }
    }
}
