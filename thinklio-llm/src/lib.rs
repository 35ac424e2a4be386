//! Model providers of Thinklio over `reqwest`:
//!
//! - [`OpenAiCompatible`]: the chat-completions API of OpenAI and of every
//!   server that speaks it (OpenRouter, Ollama, vLLM, llama.cpp server).
//! - [`Anthropic`]: the Anthropic Messages API.
//! - [`OpenAiEmbeddings`]: the embeddings API of the same servers.
//! - `MiniLm` (feature `local-embeddings`): all-MiniLM-L6-v2 embeddings
//!   computed in-process with `candle`, no server and no key.
//! - [`FallbackChain`]: tries models in order until one answers.
//! - [`ScriptedModel`]: plays given replies and tool calls, for tests and
//!   offline demos.
//! - [`config`]: picks a model from `THINKLIO_MODEL` and the variables each
//!   provider's own SDKs read.
//! - [`prices`]: the providers' published list prices, for the runtime's
//!   cost accounting and budgets.
//!
//! Both HTTP providers support tool calls and streaming (SSE), retry 408, 409,
//! 429, 5xx and timeouts with exponential backoff that honours `Retry-After`,
//! and keep the HTTP status and headers in their errors. API keys never
//! appear in `Debug` output or logs.

#![warn(missing_docs)]

mod anthropic;
pub mod config;
mod embeddings;
mod fallback;
mod http;
#[cfg(feature = "local-embeddings")]
mod minilm;
mod openai;
pub mod prices;
mod scripted;
mod secret;
#[cfg(feature = "tiktoken")]
mod tiktoken;

pub use anthropic::Anthropic;
pub use embeddings::OpenAiEmbeddings;
pub use fallback::FallbackChain;
pub use http::HttpRetry;
#[cfg(feature = "local-embeddings")]
pub use minilm::MiniLm;
pub use openai::OpenAiCompatible;
pub use scripted::{ScriptedModel, ScriptedReply};
pub use secret::ApiKey;
#[cfg(feature = "tiktoken")]
pub use tiktoken::Tiktoken;
