//! Exact token counts for OpenAI's model families, with `tiktoken-rs` (the
//! maintained Rust port of OpenAI's tokenizer), for context budgets.

use thinklio_core::context::{EstimatedTokens, TokenCounter};
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

/// Counts tokens with OpenAI's tokenizer of the model (`o200k_base` for
/// the GPT-4o, GPT-4.1, GPT-5 and o-series families, `cl100k_base` for
/// GPT-4 and GPT-3.5), and with the documented
/// [`EstimatedTokens`] for any model tiktoken does not know (Anthropic's,
/// local ones). A provider's prefix (`openai/gpt-4o` on a router) is
/// looked through.
///
/// ```
/// use thinklio_core::context::TokenCounter;
/// let counter = thinklio_llm::Tiktoken;
/// assert_eq!(counter.count("gpt-4o-mini", "hello world"), 2);
/// assert_eq!(counter.method("gpt-4o-mini"), "o200k_base");
/// assert_eq!(counter.method("claude-sonnet-4-5"), "estimate");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Tiktoken;

fn tokenizer(model: &str) -> Option<Tokenizer> {
    get_tokenizer(model).or_else(|| get_tokenizer(model.rsplit('/').next().unwrap_or(model)))
}

impl TokenCounter for Tiktoken {
    fn count(&self, model: &str, text: &str) -> usize {
        match tokenizer(model) {
            // Loaded once per tokenizer, then shared (`tiktoken-rs` keeps
            // the tables as process-wide singletons).
            Some(t) => match tiktoken_rs::bpe_for_tokenizer(t) {
                Ok(bpe) => bpe.count_ordinary(text),
                Err(_) => EstimatedTokens.count(model, text),
            },
            None => EstimatedTokens.count(model, text),
        }
    }

    fn method(&self, model: &str) -> &'static str {
        match tokenizer(model) {
            Some(Tokenizer::O200kBase) => "o200k_base",
            Some(Tokenizer::O200kHarmony) => "o200k_harmony",
            Some(Tokenizer::Cl100kBase) => "cl100k_base",
            Some(Tokenizer::P50kBase) => "p50k_base",
            Some(Tokenizer::P50kEdit) => "p50k_edit",
            Some(Tokenizer::R50kBase) => "r50k_base",
            Some(Tokenizer::Gpt2) => "gpt2",
            None => "estimate",
        }
    }
}
