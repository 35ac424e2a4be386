//! The narrow traits a model provider implements: [`ChatModel`] for chat with
//! tool calls (plain and streamed) and [`Embedder`] for embeddings. A provider
//! implements the ones it supports; there is no catch-all provider trait.

use crate::error::ErrorCode;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::usage::TokenUsage;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A capability's result.
    Tool,
}

/// One message of a conversation with a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// The text (may be empty for an assistant message that only calls tools).
    pub content: String,
    /// Tool calls, for assistant messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call answered, for tool messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Images, for user messages (providers show them before the text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<crate::image::ChatImage>,
}

impl ChatMessage {
    fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            images: Vec::new(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }

    /// A user message with images.
    pub fn user_with_images(
        content: impl Into<String>,
        images: Vec<crate::image::ChatImage>,
    ) -> Self {
        Self {
            images,
            ..Self::text(Role::User, content)
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text(Role::Assistant, content)
    }

    /// An assistant message that calls tools.
    pub fn assistant_with_tools(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::text(Role::Assistant, content)
        }
    }

    /// The result of tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::text(Role::Tool, content)
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Its name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// A call of a tool by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id of the call; the result refers to it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model wrote them: JSON text that may be malformed.
    /// The harness parses and validates it, and a failure goes back to the model.
    pub arguments: String,
}

impl ToolCall {
    /// A tool call.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// One request to a chat model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model id.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    /// The most tokens to produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling: only the most likely tokens whose probabilities
    /// add up to this are sampled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Sequences that end the answer where they appear (not included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// When set, the answer's text is JSON matching this schema (providers
    /// constrain the output their own way: OpenAI-compatible APIs with
    /// `response_format`, Anthropic with a forced tool call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<OutputSchema>,
}

/// A JSON Schema the answer must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSchema {
    /// A name for it (letters, digits, `_`, `-`).
    pub name: String,
    /// The schema.
    pub schema: Value,
}

impl OutputSchema {
    /// The schema of `T` in the strict form providers constrain output
    /// with: every object closed (`additionalProperties: false`) with all
    /// its properties required (an `Option` field is answered `null`), no
    /// `$schema` marker and no non-string `format`s. Named after `T`.
    ///
    /// ```
    /// #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// struct Verdict { label: String, score: Option<f64> }
    /// let schema = thinklio_core::OutputSchema::of::<Verdict>();
    /// assert_eq!(schema.name, "Verdict");
    /// assert_eq!(schema.schema["required"], serde_json::json!(["label", "score"]));
    /// assert!(schema.check(r#"{"label":"ok","score":null}"#).is_ok());
    /// assert!(schema.check(r#"{"label":"ok"}"#).is_err());
    /// ```
    pub fn of<T: schemars::JsonSchema>() -> Self {
        let mut schema = schemars::schema_for!(T).to_value();
        if let Some(obj) = schema.as_object_mut() {
            obj.remove("$schema");
        }
        strict(&mut schema);
        let name: String = schema
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("answer")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .take(64)
            .collect();
        Self {
            name: if name.is_empty() {
                "answer".into()
            } else {
                name
            },
            schema,
        }
    }

    /// Reads `text` as JSON and checks it against the schema; on failure,
    /// what is wrong, in words a model can act on.
    pub fn check(&self, text: &str) -> Result<Value, String> {
        let value: Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("the answer is not JSON ({e})"))?;
        let validator = jsonschema::validator_for(&self.schema)
            .map_err(|e| format!("the schema `{}` does not compile: {e}", self.name))?;
        let problems = crate::capability::describe(&validator, &value);
        if problems.is_empty() {
            Ok(value)
        } else {
            Err(problems)
        }
    }
}

/// Puts a schema in the strict form ([`OutputSchema::of`]). Written here
/// rather than taken from a crate: it is a dozen lines over `serde_json`,
/// and what "strict" means is the providers' rule, not a standard's.
fn strict(schema: &mut Value) {
    match schema {
        Value::Object(obj) => {
            if let Some(Value::Object(props)) = obj.get("properties") {
                let keys: Vec<Value> = props.keys().cloned().map(Value::String).collect();
                obj.insert("required".into(), Value::Array(keys));
                obj.insert("additionalProperties".into(), Value::Bool(false));
            }
            let is_string = obj.get("type").and_then(Value::as_str) == Some("string");
            if !is_string {
                obj.remove("format");
            }
            for value in obj.values_mut() {
                strict(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

impl ChatRequest {
    /// A request for `model` with `messages` and no tools.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            tools: Vec::new(),
            max_tokens: None,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            output_schema: None,
        }
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// It finished its answer.
    Stop,
    /// It wants tools called.
    ToolCalls,
    /// It hit the token limit.
    Length,
    /// A content filter stopped it.
    ContentFilter,
    /// Something else, as the provider named it.
    Other(String),
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model that answered (may differ from the one asked, behind a fallback chain).
    pub model: String,
    /// The assistant message, with any tool calls.
    pub message: ChatMessage,
    /// Tokens used.
    pub usage: TokenUsage,
    /// Why it stopped.
    pub finish_reason: FinishReason,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// More text.
    TextDelta(String),
    /// A tool call begins.
    ToolCallStart {
        /// Position of the call in the answer.
        index: usize,
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// More argument text of a tool call.
    ToolCallDelta {
        /// Position of the call in the answer.
        index: usize,
        /// The next piece of JSON text.
        arguments: String,
    },
    /// The whole answer, assembled: always the last event of a stream.
    Done(ChatResponse),
}

/// A streamed answer.
pub type ChatStream = BoxStream<'static, Result<StreamEvent, ModelError>>;

/// Why a model call failed. HTTP errors keep status and headers so that retry
/// logic can honour `Retry-After`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The provider answered with an error status.
    #[error("model provider answered HTTP {status}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Response headers (names lower-case).
        headers: Vec<(String, String)>,
        /// The provider's error message, or the body.
        message: String,
    },
    /// No answer in time.
    #[error("model call timed out after {0:?}")]
    Timeout(Duration),
    /// The provider could not be reached.
    #[error("could not reach the model provider: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The answer could not be read.
    #[error("model answer could not be read: {0}")]
    MalformedResponse(String),
    /// The model is configured wrongly (missing key, unknown provider).
    #[error("model configuration: {0}")]
    Config(String),
    /// A scripted model ran out of replies.
    #[error("scripted model has no reply left for call {0}")]
    ScriptExhausted(usize),
    /// Every model of a fallback chain failed; the errors in order.
    #[error("all {} models of the fallback chain failed; last: {}", .0.len(), FallbackErrors(.0))]
    FallbackExhausted(Vec<(String, ModelError)>),
}

struct FallbackErrors<'a>(&'a [(String, ModelError)]);

impl fmt::Display for FallbackErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.last() {
            Some((model, e)) => write!(f, "{model}: {e}"),
            None => f.write_str("none"),
        }
    }
}

impl ModelError {
    /// A stable code for hosts and step records.
    pub fn code(&self) -> ErrorCode {
        match self {
            ModelError::Http { status: 429, .. } => ErrorCode::ModelRateLimited,
            ModelError::Http { .. } => ErrorCode::ModelHttp,
            ModelError::Timeout(_) => ErrorCode::ModelTimeout,
            ModelError::Transport(_) => ErrorCode::ModelTransport,
            ModelError::MalformedResponse(_) => ErrorCode::ModelMalformedResponse,
            ModelError::Config(_) => ErrorCode::ModelConfig,
            ModelError::ScriptExhausted(_) => ErrorCode::ModelScriptExhausted,
            ModelError::FallbackExhausted(_) => ErrorCode::ModelFallbackExhausted,
        }
    }

    /// Whether the same call may succeed if tried again: 408, 409, 429, 5xx,
    /// timeouts and transport failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Http { status, .. } => {
                matches!(status, 408 | 409 | 429) || (500..600).contains(status)
            }
            ModelError::Timeout(_) | ModelError::Transport(_) => true,
            _ => false,
        }
    }

    /// The delay the provider asked for, if any: `retry-after-ms`, or
    /// `Retry-After` in seconds or as an HTTP date (counted from now). An
    /// absurd ask (`1e20` seconds) is [`Duration::MAX`], which a caller
    /// treats as "longer than I wait"; an unreadable one is `None`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_at(std::time::SystemTime::now())
    }

    /// [`ModelError::retry_after`] with the clock given, for an HTTP date.
    pub fn retry_after_at(&self, now: std::time::SystemTime) -> Option<Duration> {
        let ModelError::Http { headers, .. } = self else {
            return None;
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        };
        // Some providers send a millisecond variant; it is the more precise.
        if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
        let value = header("retry-after")?;
        if let Ok(secs) = value.parse::<f64>() {
            if secs.is_nan() || secs < 0.0 {
                return None;
            }
            return Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
        }
        // `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`: a date already past
        // asks for no wait.
        let at = httpdate::parse_http_date(value).ok()?;
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// Whether trying another model (a fallback) may help: the provider
    /// was unavailable (what [`ModelError::is_retryable`] retries), answered
    /// what could not be read, or does not know the model (`404`). A
    /// request a provider refuses as malformed (`400`) or unauthorised
    /// (`401`, `403`) is the caller's to fix; trying the next model would
    /// only hide it.
    pub fn warrants_fallback(&self) -> bool {
        self.is_retryable()
            || matches!(
                self,
                ModelError::Http { status: 404, .. } | ModelError::MalformedResponse(_)
            )
    }
}

/// A chat model with tool calling.
#[async_trait]
pub trait ChatModel: Send + Sync + 'static {
    /// One call: the whole answer at once.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError>;

    /// One call, streamed: text and tool-call deltas, then
    /// [`StreamEvent::Done`] with the assembled answer.
    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError>;
}

/// A model that turns texts into vectors.
#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// Length of every vector this embedder returns.
    fn dimensions(&self) -> usize;

    /// One vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, headers: &[(&str, &str)]) -> ModelError {
        ModelError::Http {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            message: String::new(),
        }
    }

    #[test]
    fn retryable_statuses() {
        assert!(http(429, &[]).is_retryable());
        assert!(http(503, &[]).is_retryable());
        assert!(!http(400, &[]).is_retryable());
        assert!(!http(401, &[]).is_retryable());
    }

    #[test]
    fn retry_after_never_panics_and_reads_dates() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_400);
        let asked = |v: &str| http(429, &[("Retry-After", v)]).retry_after_at(at);
        assert_eq!(asked("1e20"), Some(Duration::MAX));
        assert_eq!(asked("inf"), Some(Duration::MAX));
        assert_eq!(asked("NaN"), None);
        assert_eq!(asked("-3"), None);
        assert_eq!(asked("0.25"), Some(Duration::from_millis(250)));
        // 2015-10-21T07:28:00Z is 1445412480: 80 s after `at`.
        assert_eq!(
            asked("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::from_secs(80))
        );
        assert_eq!(asked("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(asked("soon"), None);
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)] // only its schema is used
    struct Order {
        id: u32,
        lines: Vec<Line>,
        status: Status,
        note: Option<String>,
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)] // only its schema is used
    struct Line {
        sku: String,
        quantity: Option<u16>,
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)] // only its schema is used
    enum Status {
        Open,
        Shipped,
    }

    /// Every object of the schema, wherever it is.
    fn objects(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        match v {
            serde_json::Value::Object(o) => {
                if o.contains_key("properties") {
                    out.push(v.clone());
                }
                o.values().for_each(|v| objects(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| objects(v, out)),
            _ => {}
        }
    }

    #[test]
    fn a_strict_schema_closes_every_object_and_requires_every_property() {
        let schema = OutputSchema::of::<Order>();
        assert_eq!(schema.name, "Order");
        let mut found = Vec::new();
        objects(&schema.schema, &mut found);
        assert_eq!(found.len(), 2, "the order and its line");
        for o in &found {
            assert_eq!(o["additionalProperties"], false);
            let props: Vec<&String> = o["properties"].as_object().unwrap().keys().collect();
            let required: Vec<&str> = o["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            assert_eq!(props.len(), required.len());
        }
        assert!(
            !schema.schema.to_string().contains("uint"),
            "no integer formats"
        );
        let ok = r#"{"id":1,"lines":[{"sku":"A","quantity":null}],"status":"open","note":null}"#;
        assert!(schema.check(ok).is_ok());
        let extra = r#"{"id":1,"lines":[],"status":"open","note":null,"more":1}"#;
        assert!(schema.check(extra).unwrap_err().contains("more"));
        assert!(schema.check("[1,2").unwrap_err().contains("not JSON"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Whatever a model answers, checking it is an answer or a reason.
        #[test]
        fn any_answer_is_checked_without_panic(
            text in "\\PC{0,80}",
            jsonish in "[\\[\\]{}\":,0-9a-z \\-.eE]{0,80}",
        ) {
            let schema = OutputSchema::of::<Order>();
            let _ = schema.check(&text);
            let _ = schema.check(&jsonish);
            let wrapped = format!(r#"{{"id":1,"lines":[{jsonish}],"status":"open","note":null}}"#);
            let _ = schema.check(&wrapped);
        }

        #[test]
        fn any_retry_after_header_is_read_without_panic(value in ".{0,40}", ms in ".{0,12}") {
            let e = http(503, &[("Retry-After", value.as_str()), ("retry-after-ms", ms.as_str())]);
            let _ = e.retry_after();
            let e = http(503, &[("Retry-After", value.as_str())]);
            let _ = e.retry_after();
        }
    }

    #[test]
    fn only_an_unavailable_provider_warrants_a_fallback() {
        for (status, fallback) in [
            (400, false),
            (401, false),
            (403, false),
            (404, true),
            (429, true),
            (500, true),
            (503, true),
        ] {
            assert_eq!(http(status, &[]).warrants_fallback(), fallback, "{status}");
        }
    }

    #[test]
    fn retry_after_is_read() {
        assert_eq!(
            http(429, &[("Retry-After", "2")]).retry_after(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            http(429, &[("retry-after-ms", "150")]).retry_after(),
            Some(Duration::from_millis(150))
        );
        assert_eq!(http(429, &[]).retry_after(), None);
    }
}
