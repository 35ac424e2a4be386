//! A model that plays given replies: for tests, benchmarks and offline demos.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use thinklio_core::{
    ChatMessage, ChatModel, ChatRequest, ChatResponse, ChatStream, FinishReason, ModelError,
    StreamEvent, TokenUsage, ToolCall,
};

/// One reply of a [`ScriptedModel`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ScriptedReply {
    /// Answer with text.
    Text(String),
    /// Call tools (with optional text).
    ToolCalls {
        /// Text before the calls.
        text: String,
        /// The calls.
        calls: Vec<ToolCall>,
    },
    /// Fail as an HTTP error with this status.
    HttpError(u16),
}

impl ScriptedReply {
    /// A text answer.
    pub fn text(text: impl Into<String>) -> Self {
        ScriptedReply::Text(text.into())
    }

    /// One tool call with JSON arguments (written as the model would: raw text).
    pub fn tool_call(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        ScriptedReply::ToolCalls {
            text: String::new(),
            calls: vec![ToolCall::new(id, name, arguments)],
        }
    }

    /// An HTTP error.
    pub fn http_error(status: u16) -> Self {
        ScriptedReply::HttpError(status)
    }
}

type Responder = Box<dyn Fn(&ChatRequest) -> ScriptedReply + Send + Sync>;

enum Script {
    Queue(Mutex<VecDeque<ScriptedReply>>),
    Responder(Responder),
}

/// A chat model that plays a script: either a fixed sequence of replies, or a
/// function of the request (which survives restarts, since it depends only on
/// the conversation). Token usage is counted as one token per four bytes, so
/// usage and cost paths see real numbers. Every request is recorded.
///
/// ```
/// use thinklio_llm::{ScriptedModel, ScriptedReply};
/// let model = ScriptedModel::new([
///     ScriptedReply::tool_call("call_1", "calculator", r#"{"expression":"17*23"}"#),
///     ScriptedReply::text("17 × 23 = 391"),
/// ]);
/// # let _ = model;
/// ```
pub struct ScriptedModel {
    script: Script,
    name: Option<String>,
    delay: Option<Duration>,
    calls: AtomicUsize,
    requests: Mutex<Vec<ChatRequest>>,
    record: bool,
}

impl std::fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedModel")
            .field("name", &self.name)
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ScriptedModel {
    /// Plays `replies` in order; a call after the last one fails with
    /// [`ModelError::ScriptExhausted`].
    pub fn new(replies: impl IntoIterator<Item = ScriptedReply>) -> Self {
        Self::with_script(Script::Queue(Mutex::new(replies.into_iter().collect())))
    }

    /// Answers each request with `f(request)`.
    pub fn responder(f: impl Fn(&ChatRequest) -> ScriptedReply + Send + Sync + 'static) -> Self {
        Self::with_script(Script::Responder(Box::new(f)))
    }

    fn with_script(script: Script) -> Self {
        Self {
            script,
            name: None,
            delay: None,
            calls: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            record: true,
        }
    }

    /// The model name reported in answers (default: the model asked for).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Waits `delay` before each answer, like a remote model would.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Stops recording requests (for benchmarks of many calls).
    pub fn without_recording(mut self) -> Self {
        self.record = false;
        self
    }

    /// Calls so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn next_reply(&self, request: &ChatRequest) -> Result<ScriptedReply, ModelError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.record {
            self.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(request.clone());
        }
        match &self.script {
            Script::Queue(q) => q
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
                .ok_or(ModelError::ScriptExhausted(n)),
            Script::Responder(f) => Ok(f(request)),
        }
    }
}

fn approx_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

#[async_trait]
impl ChatModel for ScriptedModel {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let reply = self.next_reply(request)?;
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        let input: u64 = request
            .messages
            .iter()
            .map(|m| approx_tokens(&m.content))
            .sum();
        let (message, finish_reason) = match reply {
            ScriptedReply::Text(text) => (ChatMessage::assistant(text), FinishReason::Stop),
            ScriptedReply::ToolCalls { text, calls } => (
                ChatMessage::assistant_with_tools(text, calls),
                FinishReason::ToolCalls,
            ),
            ScriptedReply::HttpError(status) => {
                return Err(ModelError::Http {
                    status,
                    headers: Vec::new(),
                    message: format!("scripted HTTP {status}"),
                });
            }
        };
        let output = approx_tokens(&message.content)
            + message
                .tool_calls
                .iter()
                .map(|c| approx_tokens(&c.arguments) + approx_tokens(&c.name))
                .sum::<u64>();
        Ok(ChatResponse {
            model: self.name.clone().unwrap_or_else(|| request.model.clone()),
            message,
            usage: TokenUsage::new(input, output),
            finish_reason,
        })
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        let response = self.chat(request).await?;
        let mut events = Vec::new();
        // Word by word, as a provider streams it, so hosts that show text
        // while it is written can be tried offline.
        for word in response.message.content.split_inclusive(' ') {
            events.push(StreamEvent::TextDelta(word.to_owned()));
        }
        for (index, call) in response.message.tool_calls.iter().enumerate() {
            events.push(StreamEvent::ToolCallStart {
                index,
                id: call.id.clone(),
                name: call.name.clone(),
            });
            events.push(StreamEvent::ToolCallDelta {
                index,
                arguments: call.arguments.clone(),
            });
        }
        events.push(StreamEvent::Done(response));
        Ok(futures::stream::iter(events.into_iter().map(Ok)).boxed())
    }
}
