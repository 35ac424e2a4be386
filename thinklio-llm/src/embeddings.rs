//! The OpenAI embeddings API (`POST /v1/embeddings`), as served by OpenAI,
//! OpenRouter, Ollama, vLLM and llama.cpp server.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use thinklio_core::{Embedder, ModelError};

use crate::http::{self, Endpoint, HttpRetry};
use crate::secret::ApiKey;

/// An [`Embedder`] speaking the OpenAI embeddings API.
///
/// ```
/// use thinklio_llm::{ApiKey, OpenAiEmbeddings};
/// let small = OpenAiEmbeddings::new(
///     "https://api.openai.com/v1",
///     Some(ApiKey::new("sk-...")),
///     "text-embedding-3-small",
///     384, // asked of the API with `dimensions`
/// );
/// # let _ = small;
/// ```
#[derive(Clone, Debug)]
pub struct OpenAiEmbeddings {
    endpoint: Endpoint,
    api_key: Option<ApiKey>,
    model: String,
    dimensions: usize,
    send_dimensions: bool,
}

impl OpenAiEmbeddings {
    /// Embeddings of `model` at `base_url` (ending in `/v1`), `dimensions`
    /// long: the request asks for that length (models of the
    /// `text-embedding-3` family shorten their vectors on request).
    pub fn new(
        base_url: impl Into<String>,
        api_key: Option<ApiKey>,
        model: impl Into<String>,
        dimensions: usize,
    ) -> Self {
        Self {
            endpoint: Endpoint::new("openai", base_url.into()),
            api_key,
            model: model.into(),
            dimensions,
            send_dimensions: true,
        }
    }

    /// For models with a fixed length that refuse the `dimensions` field
    /// (most served by Ollama, vLLM, llama.cpp): it is not sent, and answers
    /// of another length are refused.
    pub fn fixed_dimensions(mut self) -> Self {
        self.send_dimensions = false;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: HttpRetry) -> Self {
        self.endpoint.retry = retry;
        self
    }
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Datum>,
}

#[derive(Deserialize)]
struct Datum {
    index: usize,
    embedding: Vec<f32>,
}

#[async_trait]
impl Embedder for OpenAiEmbeddings {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut body = json!({ "model": self.model, "input": texts, "encoding_format": "float" });
        if self.send_dimensions {
            body["dimensions"] = json!(self.dimensions);
        }
        let mut headers = Vec::new();
        if let Some(key) = &self.api_key {
            let value = http::secret_header(format!("Bearer {}", key.expose()))?;
            headers.push((reqwest::header::AUTHORIZATION, value));
        }
        let response = self.endpoint.post("embeddings", &body, &headers).await?;
        let text = self.endpoint.text(response).await?;
        let answer: Answer = serde_json::from_str(&text)
            .map_err(|e| ModelError::MalformedResponse(format!("embeddings: {e}")))?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for d in answer.data {
            if d.embedding.len() != self.dimensions {
                return Err(ModelError::MalformedResponse(format!(
                    "embedding of {} dimensions where {} were expected",
                    d.embedding.len(),
                    self.dimensions
                )));
            }
            match out.get_mut(d.index) {
                Some(slot) => *slot = Some(d.embedding),
                None => {
                    return Err(ModelError::MalformedResponse(format!(
                        "embedding index {} for {} inputs",
                        d.index,
                        texts.len()
                    )));
                }
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.ok_or_else(|| {
                    ModelError::MalformedResponse(format!("no embedding for input {i}"))
                })
            })
            .collect()
    }
}
