//! A chain of models tried in order.

use std::sync::Arc;

use async_trait::async_trait;
use thinklio_core::{ChatModel, ChatRequest, ChatResponse, ChatStream, ModelError};

/// Tries each model in order until one answers. Each link may replace the
/// requested model id (so `gpt-4o-mini` can fall back to
/// `claude-haiku-4-5`). Each link retries on its own first (per its
/// provider's policy); the chain moves on when a link gives up for a reason
/// another model may not share ([`ModelError::warrants_fallback`]: the
/// provider is unavailable, answered nonsense, or lacks the model). A
/// request refused as malformed or unauthorised (`400`, `401`, `403`) is
/// returned at once: the next model would hide the mistake, not fix it.
///
/// ```
/// use thinklio_llm::{FallbackChain, ScriptedModel, ScriptedReply};
/// let chain = FallbackChain::new()
///     .then(ScriptedModel::new([ScriptedReply::http_error(503)]), Some("primary"))
///     .then(ScriptedModel::new([ScriptedReply::text("hi")]), Some("backup"));
/// # let _ = chain;
/// ```
#[derive(Clone, Default)]
pub struct FallbackChain {
    links: Vec<(Arc<dyn ChatModel>, Option<String>)>,
}

impl std::fmt::Debug for FallbackChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.links
                    .iter()
                    .map(|(_, m)| m.as_deref().unwrap_or("(requested)")),
            )
            .finish()
    }
}

impl FallbackChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a model, optionally with the model id to ask it for.
    pub fn then(self, model: impl ChatModel, model_id: Option<&str>) -> Self {
        self.then_arc(Arc::new(model), model_id)
    }

    /// Adds a shared model.
    pub fn then_arc(mut self, model: Arc<dyn ChatModel>, model_id: Option<&str>) -> Self {
        self.links.push((model, model_id.map(str::to_owned)));
        self
    }

    fn request_for(request: &ChatRequest, model_id: &Option<String>) -> ChatRequest {
        let mut r = request.clone();
        if let Some(id) = model_id {
            r.model = id.clone();
        }
        r
    }
}

#[async_trait]
impl ChatModel for FallbackChain {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let mut errors = Vec::new();
        for (model, id) in &self.links {
            let r = Self::request_for(request, id);
            match model.chat(&r).await {
                Ok(response) => return Ok(response),
                Err(e) if !e.warrants_fallback() => return Err(e),
                Err(e) => {
                    tracing::warn!(model = %r.model, error = %e, "model failed; falling back to the next");
                    errors.push((r.model, e));
                }
            }
        }
        Err(ModelError::FallbackExhausted(errors))
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        let mut errors = Vec::new();
        for (model, id) in &self.links {
            let r = Self::request_for(request, id);
            match model.chat_stream(&r).await {
                Ok(stream) => return Ok(stream),
                Err(e) if !e.warrants_fallback() => return Err(e),
                Err(e) => {
                    tracing::warn!(model = %r.model, error = %e, "model failed; falling back to the next");
                    errors.push((r.model, e));
                }
            }
        }
        Err(ModelError::FallbackExhausted(errors))
    }
}
