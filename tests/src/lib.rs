//! Shared pieces of Thinklio's cross-crate end-to-end tests.

#![allow(missing_docs)]

use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_core::{ContentRules, FunctionCapability, Principal, SideEffect};

#[derive(Deserialize, JsonSchema)]
pub struct AddArgs {
    /// First addend.
    pub a: i64,
    /// Second addend.
    pub b: i64,
}

/// `add(a, b)`: a read-only capability.
pub fn add() -> FunctionCapability {
    FunctionCapability::builder("add", "Adds two integers.")
        .side_effect(SideEffect::ReadOnly)
        .handler(|args: AddArgs| async move {
            args.a
                .checked_add(args.b)
                .ok_or_else(|| "the sum overflows".to_string())
        })
}

/// Where the local MiniLM model is (`THINKLIO_MINILM_DIR`, else what
/// `scripts/fetch-minilm.sh` fetches into `target/models/`). A missing model
/// is a failure with the command that fixes it, never a skipped test.
pub fn minilm_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("THINKLIO_MINILM_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/models/all-minilm-l6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "the MiniLM model is not in {}: run scripts/fetch-minilm.sh",
        dir.display()
    );
    dir
}

/// Content rules of the tests: no message may ask for a password, no
/// reply may reveal a secret.
pub struct NoSecrets;

#[async_trait::async_trait]
impl ContentRules for NoSecrets {
    async fn check_message(&self, _: &Principal, text: &str) -> Result<(), String> {
        if text.contains("password") {
            return Err("messages may not ask for passwords".into());
        }
        Ok(())
    }

    async fn check_reply(&self, _: &Principal, text: &str) -> Result<(), String> {
        if text.contains("secret") {
            return Err("replies may not reveal secrets".into());
        }
        Ok(())
    }
}
