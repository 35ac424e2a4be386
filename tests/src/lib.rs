//! Shared pieces of Thinklio's cross-crate end-to-end tests.

#![allow(missing_docs)]

use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_core::{FunctionCapability, SideEffect};

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
