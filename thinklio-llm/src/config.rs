//! Picks a chat model from the environment, the way the quickstart and other
//! hosts do.
//!
//! `THINKLIO_MODEL` is `provider/model`; several, separated by commas, form a
//! [`FallbackChain`] tried in order:
//!
//! | `THINKLIO_MODEL` | provider | key | base URL |
//! | --- | --- | --- | --- |
//! | `openai/gpt-4o-mini` | OpenAI chat completions | `OPENAI_API_KEY` | `OPENAI_BASE_URL`, default `https://api.openai.com/v1` |
//! | `anthropic/claude-sonnet-4-5` | Anthropic Messages | `ANTHROPIC_API_KEY` | `ANTHROPIC_BASE_URL`, default `https://api.anthropic.com` |
//! | `openrouter/meta-llama/llama-3.3-70b-instruct` | OpenRouter | `OPENROUTER_API_KEY` | `https://openrouter.ai/api/v1` |
//! | `ollama/llama3.2` | Ollama (OpenAI-compatible) | none | `OLLAMA_HOST`, default `http://localhost:11434` |
//!
//! `openai/...` with `OPENAI_BASE_URL` set works against any
//! OpenAI-compatible server (vLLM, llama.cpp server); the key is then optional.

use std::sync::Arc;

use thinklio_core::{ChatModel, ModelError};

use crate::{Anthropic, ApiKey, FallbackChain, OpenAiCompatible};

/// A model picked from configuration.
#[derive(Clone)]
pub struct ModelChoice {
    /// The model id to put in agent definitions (the first of a chain).
    pub model: String,
    /// What was configured, for a one-line description (`openai/gpt-4o-mini`).
    pub description: String,
    /// The chat model.
    pub chat: Arc<dyn ChatModel>,
}

impl std::fmt::Debug for ModelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelChoice")
            .field("model", &self.model)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// Reads the process environment; `Ok(None)` when `THINKLIO_MODEL` is unset or empty.
pub fn from_env() -> Result<Option<ModelChoice>, ModelError> {
    from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// Like [`from_env`], reading variables through `lookup`.
pub fn from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<ModelChoice>, ModelError> {
    let Some(spec) = lookup("THINKLIO_MODEL") else {
        return Ok(None);
    };
    let specs: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut links = Vec::new();
    for s in &specs {
        links.push(one(s, &lookup)?);
    }
    let first_model = links.first().map(|(_, m)| m.clone()).unwrap_or_default();
    let chat: Arc<dyn ChatModel> = if links.len() == 1 {
        links.remove(0).0
    } else {
        links
            .into_iter()
            .fold(FallbackChain::new(), |chain, (model, id)| {
                chain.then_arc(model, Some(&id))
            })
            .into_arc()
    };
    Ok(Some(ModelChoice {
        model: first_model,
        description: specs.join(", "),
        chat,
    }))
}

impl FallbackChain {
    fn into_arc(self) -> Arc<dyn ChatModel> {
        Arc::new(self)
    }
}

fn one(
    spec: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(Arc<dyn ChatModel>, String), ModelError> {
    let Some((provider, model)) = spec
        .split_once('/')
        .filter(|(p, m)| !p.is_empty() && !m.is_empty())
    else {
        return Err(ModelError::Config(format!(
            "THINKLIO_MODEL entry `{spec}` is not `provider/model` (e.g. openai/gpt-4o-mini)"
        )));
    };
    let missing = |var: &str| ModelError::Config(format!("{spec} needs {var} to be set"));
    let model = model.to_owned();
    let chat: Arc<dyn ChatModel> = match provider {
        "openai" => {
            let base = lookup("OPENAI_BASE_URL");
            let key = lookup("OPENAI_API_KEY").map(ApiKey::new);
            if base.is_none() && key.is_none() {
                return Err(missing("OPENAI_API_KEY"));
            }
            let base = base.unwrap_or_else(|| "https://api.openai.com/v1".into());
            Arc::new(OpenAiCompatible::new(base, key))
        }
        "anthropic" => {
            let key = lookup("ANTHROPIC_API_KEY").ok_or_else(|| missing("ANTHROPIC_API_KEY"))?;
            let base =
                lookup("ANTHROPIC_BASE_URL").unwrap_or_else(|| "https://api.anthropic.com".into());
            Arc::new(Anthropic::new(base, ApiKey::new(key)))
        }
        "openrouter" => {
            let key = lookup("OPENROUTER_API_KEY").ok_or_else(|| missing("OPENROUTER_API_KEY"))?;
            Arc::new(OpenAiCompatible::new(
                "https://openrouter.ai/api/v1",
                Some(ApiKey::new(key)),
            ))
        }
        "ollama" => {
            let host = lookup("OLLAMA_HOST").unwrap_or_else(|| "http://localhost:11434".into());
            let host = if host.starts_with("http://") || host.starts_with("https://") {
                host
            } else {
                format!("http://{host}")
            };
            Arc::new(OpenAiCompatible::new(
                format!("{}/v1", host.trim_end_matches('/')),
                None,
            ))
        }
        other => {
            return Err(ModelError::Config(format!(
                "unknown model provider `{other}` in THINKLIO_MODEL; use openai, anthropic, openrouter or ollama"
            )));
        }
    };
    Ok((chat, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn unset_means_none() {
        assert!(from_lookup(env(&[])).unwrap().is_none());
    }

    #[test]
    fn providers_are_parsed() {
        let c = from_lookup(env(&[
            ("THINKLIO_MODEL", "openai/gpt-4o-mini"),
            ("OPENAI_API_KEY", "k"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.model, "gpt-4o-mini");
        let c = from_lookup(env(&[
            ("THINKLIO_MODEL", "openrouter/meta/llama-3"),
            ("OPENROUTER_API_KEY", "k"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.model, "meta/llama-3");
        let c = from_lookup(env(&[("THINKLIO_MODEL", "ollama/llama3.2")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.model, "llama3.2");
        let c = from_lookup(env(&[
            (
                "THINKLIO_MODEL",
                "ollama/llama3.2, anthropic/claude-haiku-4-5",
            ),
            ("ANTHROPIC_API_KEY", "k"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.model, "llama3.2");
    }

    #[test]
    fn broken_config_is_a_clear_error() {
        let e = from_lookup(env(&[("THINKLIO_MODEL", "anthropic/claude-sonnet-4-5")])).unwrap_err();
        assert!(e.to_string().contains("ANTHROPIC_API_KEY"), "{e}");
        let e = from_lookup(env(&[("THINKLIO_MODEL", "gpt-4o")])).unwrap_err();
        assert!(e.to_string().contains("provider/model"), "{e}");
        let e = from_lookup(env(&[("THINKLIO_MODEL", "acme/x")])).unwrap_err();
        assert!(e.to_string().contains("unknown model provider"), "{e}");
    }
}
