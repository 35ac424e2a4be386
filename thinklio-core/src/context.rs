//! The model's context within a budget: how many tokens a text takes
//! ([`TokenCounter`]), how large each model's window is
//! ([`ContextWindows`]), and the budget an agent's requests are assembled
//! in ([`context_budget`]).
//!
//! Core knows no tokenizer: [`EstimatedTokens`] is the documented estimate
//! (one token per four bytes, rounded up, plus one), and a host plugs in a
//! provider's own tokenizer (`thinklio_llm::Tiktoken` for OpenAI's
//! families) with [`RuntimeBuilder::token_counter`](crate::RuntimeBuilder::token_counter).

use std::collections::BTreeMap;

use crate::agent::AgentDefinition;
use crate::model::ChatMessage;

/// Counts the tokens a text takes for a model.
pub trait TokenCounter: Send + Sync + 'static {
    /// The tokens `text` takes in `model`'s tokenizer.
    fn count(&self, model: &str, text: &str) -> usize;

    /// How `model`'s tokens are counted (`estimate`, or the tokenizer's
    /// name, such as `o200k_base`): recorded on the `context` step.
    fn method(&self, model: &str) -> &'static str;
}

/// The estimate used where no tokenizer is at hand: one token per four
/// bytes of UTF-8, rounded up, plus one (as
/// [`estimate_tokens`](crate::knowledge::estimate_tokens) counts facts). For
/// English with current BPE tokenizers this over-counts slightly, so a
/// budget kept by it is kept by the real count; for scripts of several bytes
/// per character it over-counts more.
#[derive(Debug, Clone, Copy, Default)]
pub struct EstimatedTokens;

impl TokenCounter for EstimatedTokens {
    fn count(&self, _model: &str, text: &str) -> usize {
        crate::knowledge::estimate_tokens(text)
    }

    fn method(&self, _model: &str) -> &'static str {
        "estimate"
    }
}

/// Tokens a chat message takes besides its text (role, separators), as
/// providers document it for their chat formats (three to four).
pub const MESSAGE_OVERHEAD: usize = 4;

/// The tokens `message` takes: its text, its tool calls' names and
/// arguments, its images ([`image_tokens`](crate::image::image_tokens)),
/// and [`MESSAGE_OVERHEAD`].
pub fn message_tokens(counter: &dyn TokenCounter, model: &str, message: &ChatMessage) -> usize {
    let calls: usize = message
        .tool_calls
        .iter()
        .map(|c| counter.count(model, &c.name) + counter.count(model, &c.arguments))
        .sum();
    let images: usize = message.images.iter().map(|i| i.tokens()).sum();
    counter.count(model, &message.content) + calls + images + MESSAGE_OVERHEAD
}

/// The context window of a model, when nothing else is known of it.
pub const DEFAULT_WINDOW: u32 = 32_768;

/// The output a request leaves room for when its agent sets no
/// `max_output_tokens`.
pub const DEFAULT_OUTPUT_RESERVE: u32 = 4_096;

/// Context windows, in tokens, of the common model families (by the
/// longest matching prefix of the model id), as their providers publish
/// them.
const KNOWN_WINDOWS: &[(&str, u32)] = &[
    ("gpt-3.5-turbo", 16_385),
    ("gpt-4", 8_192),
    ("gpt-4-turbo", 128_000),
    ("gpt-4o", 128_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-5", 400_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("claude", 200_000),
    ("gemini", 1_048_576),
    ("llama3.1", 131_072),
    ("llama-3.1", 131_072),
    ("llama3.2", 131_072),
    ("llama-3.2", 131_072),
    ("llama3.3", 131_072),
    ("llama-3.3", 131_072),
    ("mistral-large", 131_072),
    ("qwen2.5", 32_768),
];

/// The context window of each model: what the host sets
/// ([`ContextWindows::set`], exact model ids), else the known window of its
/// family, else [`DEFAULT_WINDOW`].
///
/// ```
/// use thinklio_core::context::ContextWindows;
/// let mut windows = ContextWindows::default();
/// assert_eq!(windows.window("gpt-4o-mini-2024-07-18"), 128_000);
/// assert_eq!(windows.window("claude-sonnet-4-5"), 200_000);
/// windows.set("my-local-model", 8_192);
/// assert_eq!(windows.window("my-local-model"), 8_192);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextWindows {
    set: BTreeMap<String, u32>,
}

impl ContextWindows {
    /// Sets the window of the model `model` (its exact id).
    pub fn set(&mut self, model: impl Into<String>, tokens: u32) {
        self.set.insert(model.into(), tokens.max(1));
    }

    /// The window of `model`, in tokens.
    pub fn window(&self, model: &str) -> u32 {
        if let Some(tokens) = self.set.get(model) {
            return *tokens;
        }
        // A provider's prefix (`openai/gpt-4o` on a router) does not hide the family.
        let name = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        KNOWN_WINDOWS
            .iter()
            .filter(|(prefix, _)| name.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(DEFAULT_WINDOW, |(_, tokens)| *tokens)
    }
}

/// The tokens one request of `agent` may take: its `context_budget` when
/// set, and never more than its model's window less the output it leaves
/// room for (`max_output_tokens`, or [`DEFAULT_OUTPUT_RESERVE`]).
pub fn context_budget(agent: &AgentDefinition, windows: &ContextWindows) -> u32 {
    let window = windows.window(&agent.model);
    let reserve = agent
        .max_output_tokens
        .unwrap_or(DEFAULT_OUTPUT_RESERVE)
        .min(window / 2);
    let room = window.saturating_sub(reserve);
    agent.context_budget.map_or(room, |b| b.min(room))
}
