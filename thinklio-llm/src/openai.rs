//! The OpenAI chat-completions API, as served by OpenAI, OpenRouter, Ollama,
//! vLLM and llama.cpp server.

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

/// A provider speaking the OpenAI chat-completions API.
///
/// ```
/// use thinklio_llm::{ApiKey, OpenAiCompatible};
/// let openai = OpenAiCompatible::new("https://api.openai.com/v1", Some(ApiKey::new("sk-...")));
/// let ollama = OpenAiCompatible::new("http://localhost:11434/v1", None);
/// # let _ = (openai, ollama);
/// ```
#[derive(Clone)]
pub struct OpenAiCompatible {
    endpoint: Endpoint,
    api_key: Option<ApiKey>,
    headers: Vec<(String, String)>,
}

impl std::fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may carry credentials: only their names are shown.
        f.debug_struct("OpenAiCompatible")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl OpenAiCompatible {
    /// A provider at `base_url` (ending in `/v1`), with an optional bearer key.
    pub fn new(base_url: impl Into<String>, api_key: Option<ApiKey>) -> Self {
        Self {
            endpoint: Endpoint::new("openai", base_url.into()),
            api_key,
            headers: Vec::new(),
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

    /// Adds a header to every request (OpenRouter's `HTTP-Referer`, say).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let messages: Vec<Value> = request.messages.iter().map(message_json).collect();
        let mut body = json!({ "model": request.model, "messages": messages });
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "type": "function",
                        "function": { "name": t.name, "description": t.description, "parameters": t.parameters }
                    })
                })
                .collect();
        }
        if let Some(max) = request.max_tokens {
            body["max_tokens"] = json!(max);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(p) = request.top_p {
            body["top_p"] = json!(p);
        }
        if !request.stop.is_empty() {
            body["stop"] = json!(request.stop);
        }
        if let Some(out) = &request.output_schema {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": { "name": out.name, "schema": out.schema, "strict": true }
            });
        }
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({ "include_usage": true });
        }
        body
    }

    async fn post(&self, body: Value) -> Result<reqwest::Response, ModelError> {
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        if let Some(key) = &self.api_key {
            let value = http::secret_header(format!("Bearer {}", key.expose()))?;
            headers.push((reqwest::header::AUTHORIZATION, value));
        }
        for (name, value) in &self.headers {
            headers.push(http::header(name, value)?);
        }
        self.endpoint
            .post("chat/completions", &body, &headers)
            .await
    }
}

fn message_json(m: &ChatMessage) -> Value {
    match m.role {
        Role::System => json!({ "role": "system", "content": m.content }),
        Role::User if m.images.is_empty() => json!({ "role": "user", "content": m.content }),
        Role::User => {
            // With images, the content is a list of parts: the text, then
            // each image as a URL (bytes as a `data:` URL).
            let mut parts = Vec::with_capacity(m.images.len() + 1);
            if !m.content.is_empty() {
                parts.push(json!({ "type": "text", "text": m.content }));
            }
            for image in &m.images {
                let url = match (&image.source, image.source.base64()) {
                    (_, Some(data)) => format!(
                        "data:{};base64,{data}",
                        image.media_type().unwrap_or_else(|| "image/png".to_owned())
                    ),
                    (ImageSource::Url(url), None) => url.clone(),
                    (_, None) => continue,
                };
                parts.push(json!({ "type": "image_url", "image_url": { "url": url } }));
            }
            json!({ "role": "user", "content": parts })
        }
        Role::Tool => {
            json!({ "role": "tool", "tool_call_id": m.tool_call_id, "content": m.content })
        }
        Role::Assistant => {
            let mut v = json!({ "role": "assistant", "content": m.content });
            if !m.tool_calls.is_empty() {
                if m.content.is_empty() {
                    v["content"] = Value::Null;
                }
                v["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id,
                            "type": "function",
                            "function": { "name": c.name, "arguments": c.arguments }
                        })
                    })
                    .collect();
            }
            v
        }
    }
}

#[derive(Deserialize)]
struct Completion {
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: WireMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<Usage> for TokenUsage {
    fn from(u: Usage) -> Self {
        TokenUsage::new(u.prompt_tokens, u.completion_tokens)
    }
}

fn finish_reason(s: Option<&str>, has_tools: bool) -> FinishReason {
    match s {
        Some("stop") => FinishReason::Stop,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_owned()),
        None if has_tools => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    }
}

#[derive(Deserialize)]
struct Chunk {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<DeltaToolCall>,
}

#[derive(Deserialize)]
struct DeltaToolCall {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    function: Option<DeltaFunction>,
}

#[derive(Deserialize)]
struct DeltaFunction {
    name: Option<String>,
    arguments: Option<String>,
}

/// Assembles a streamed answer.
#[derive(Default)]
struct Assembler {
    model: String,
    text: String,
    calls: BTreeMap<usize, ToolCall>,
    finish: Option<String>,
    usage: Usage,
}

impl Assembler {
    fn chunk(&mut self, chunk: Chunk, out: &mut Vec<StreamEvent>) {
        if let Some(m) = chunk.model.filter(|m| !m.is_empty()) {
            self.model = m;
        }
        if let Some(u) = chunk.usage {
            self.usage = u;
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                self.text.push_str(&text);
                out.push(StreamEvent::TextDelta(text));
            }
            for d in choice.delta.tool_calls {
                let call = self
                    .calls
                    .entry(d.index)
                    .or_insert_with(|| ToolCall::new("", "", ""));
                let (name, args) = match d.function {
                    Some(f) => (f.name, f.arguments),
                    None => (None, None),
                };
                if let Some(id) = d.id {
                    call.id = id;
                }
                if let Some(name) = name {
                    call.name.push_str(&name);
                    out.push(StreamEvent::ToolCallStart {
                        index: d.index,
                        id: call.id.clone(),
                        name: call.name.clone(),
                    });
                }
                if let Some(args) = args.filter(|a| !a.is_empty()) {
                    call.arguments.push_str(&args);
                    out.push(StreamEvent::ToolCallDelta {
                        index: d.index,
                        arguments: args,
                    });
                }
            }
            if let Some(f) = choice.finish_reason {
                self.finish = Some(f);
            }
        }
    }
}

impl http::StreamAssembler for Assembler {
    fn feed(
        &mut self,
        _event: &str,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) -> Result<bool, ModelError> {
        if data.trim() == "[DONE]" {
            return Ok(true);
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            match serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            {
                Some(message) => ModelError::MalformedResponse(format!(
                    "the stream reported an error: {message}"
                )),
                None => ModelError::MalformedResponse(format!("stream chunk: {e}")),
            }
        })?;
        self.chunk(chunk, out);
        Ok(false)
    }

    fn finish(self) -> ChatResponse {
        let calls: Vec<ToolCall> = self.calls.into_values().collect();
        let reason = finish_reason(self.finish.as_deref(), !calls.is_empty());
        ChatResponse {
            model: self.model,
            message: ChatMessage::assistant_with_tools(self.text, calls),
            usage: self.usage.into(),
            finish_reason: reason,
        }
    }
}

#[async_trait]
impl ChatModel for OpenAiCompatible {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let response = self.post(self.body(request, false)).await?;
        let text = self.endpoint.text(response).await?;
        let completion: Completion = serde_json::from_str(&text)
            .map_err(|e| ModelError::MalformedResponse(format!("chat completion: {e}")))?;
        let Some(choice) = completion.choices.into_iter().next() else {
            return Err(ModelError::MalformedResponse(
                "chat completion has no choices".into(),
            ));
        };
        let calls: Vec<ToolCall> = choice
            .message
            .tool_calls
            .into_iter()
            .map(|c| ToolCall::new(c.id, c.function.name, c.function.arguments))
            .collect();
        let reason = finish_reason(choice.finish_reason.as_deref(), !calls.is_empty());
        Ok(ChatResponse {
            model: completion.model.unwrap_or_else(|| request.model.clone()),
            message: ChatMessage::assistant_with_tools(
                choice.message.content.unwrap_or_default(),
                calls,
            ),
            usage: completion.usage.unwrap_or_default().into(),
            finish_reason: reason,
        })
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        let response = self.post(self.body(request, true)).await?;
        let assembler = Assembler {
            model: request.model.clone(),
            ..Assembler::default()
        };
        Ok(http::assemble(http::sse(response), assembler).boxed())
    }
}
