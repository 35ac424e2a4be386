//! Capabilities of Thinklio that reach outside the process, each behind the
//! one [`Capability`](thinklio_core::Capability) contract of `thinklio-core`,
//! so the harness validates their arguments and results, records their steps
//! and recovers them like any other.
//!
//! - [`WebhookCapability`]: an HTTP endpoint.
//! - [`McpServer`]: the tools of an MCP server process.
//! - [`builtin`]: a clock, a web-page fetch and a durable per-user todo list.
//! - [`outbound`]: where capabilities fetching what a model asks for may
//!   connect (public addresses only, unless the operator allows more).

#![warn(missing_docs)]

pub mod builtin;
mod mcp;
pub mod outbound;
mod webhook;

/// How to write capabilities of each kind (`docs/capabilities.md`, compiled
/// and run as doc tests).
#[doc = include_str!("../../docs/capabilities.md")]
pub mod guide {}

/// Approvals: calls that wait for a person's decision (`docs/approvals.md`,
/// compiled and run as doc tests).
#[doc = include_str!("../../docs/approvals.md")]
pub mod approvals_guide {}

/// What an agent sees, its model parameters and structured answers
/// (`docs/context.md`, compiled and run as doc tests).
#[doc = include_str!("../../docs/context.md")]
pub mod context_guide {}

/// Agents as data: stored definitions, versions and their lifecycle
/// (`docs/agents.md`, compiled and run as doc tests).
#[doc = include_str!("../../docs/agents.md")]
pub mod agents_guide {}

/// Jobs: deferred work, observers and follow-ups (`docs/jobs.md`, compiled
/// and run as doc tests).
#[doc = include_str!("../../docs/jobs.md")]
pub mod jobs_guide {}

pub use mcp::{McpAttach, McpError, McpHttp, McpServer};
pub use outbound::OutboundPolicy;
pub use webhook::{
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TOLERANCE, SIGNATURE_HEADER, SignatureError,
    SignedNoticeWebhook, TIMESTAMP_HEADER, WebhookCapability, WebhookSecret, sign, verify,
};
