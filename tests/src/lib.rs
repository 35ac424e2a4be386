//! Shared pieces of Thinklio's cross-crate end-to-end tests.

#![allow(missing_docs)]

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_core::{ContentRules, FunctionCapability, Principal, SideEffect, Store};

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

/// Opens the store a test process names: `postgres:SCHEMA` is that schema
/// of the PostgreSQL server at `THINKLIO_POSTGRES_URL` (started by
/// `scripts/test.sh`); anything else is a SQLite file.
pub async fn open_store(spec: &str) -> Result<Arc<dyn Store>, String> {
    match spec.strip_prefix("postgres:") {
        Some(schema) => {
            let url = std::env::var("THINKLIO_POSTGRES_URL").map_err(|_| {
                "THINKLIO_POSTGRES_URL is not set: run scripts/postgres.sh start (scripts/test.sh does)"
                    .to_owned()
            })?;
            let options = thinklio_store_postgres::PostgresOptions::default().schema(schema);
            let store = thinklio_store_postgres::PostgresStore::connect_with(&url, options)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(store))
        }
        None => {
            let store = thinklio_store_sqlite::SqliteStore::open(spec)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(store))
        }
    }
}

/// A place where a worker process stops and says so, so that a crash test
/// kills it exactly there instead of at a moment it hopes is right.
///
/// A worker is given `POINT:N` (for example `think:helper:3`): the `N`-th
/// time it reaches `POINT`, it prints `paused POINT` on stdout and waits
/// forever; the test, reading stdout, SIGKILLs it. The point names are the
/// worker's own (`think:AGENT`, `effect:before`, `deliver:after`, ...).
pub struct KillPoint {
    point: String,
    nth: usize,
    seen: std::sync::atomic::AtomicUsize,
}

impl KillPoint {
    /// Parses `POINT:N`; `None` for anything else (no pause).
    pub fn parse(spec: &str) -> Option<Self> {
        let (point, nth) = spec.rsplit_once(':')?;
        Some(Self {
            point: point.to_owned(),
            nth: nth.parse().ok()?,
            seen: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Counts a visit to `point`; on the chosen visit announces it and
    /// never returns.
    pub async fn reached(&self, point: &str) {
        if point != self.point {
            return;
        }
        let n = self
            .seen
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .saturating_add(1);
        if n == self.nth {
            announce(&format!("paused {point}"));
            std::future::pending::<()>().await;
        }
    }
}

/// Waits at an optional kill point.
pub async fn reached(kill: &Option<Arc<KillPoint>>, point: &str) {
    if let Some(kill) = kill {
        kill.reached(point).await;
    }
}

/// Prints one line on stdout at once (a test reads it through a pipe).
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits until `check` holds, checking every 10 ms (each check reads the
/// store, which says what happened: no guess of how long it takes); a
/// minute without it is "never", and fails the test naming `what`.
///
/// # Panics
/// When `check` has not held within a minute.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "never: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The steps of an interaction that made one capability call and answered.
pub const ONE_CALL: [thinklio_core::StepKind; 6] = {
    use thinklio_core::StepKind::*;
    [Context, Think, Act, Observe, Think, Respond]
};

/// Checks that `steps` are [`ONE_CALL`]'s, each succeeded (none settled as
/// interrupted, none run twice).
pub fn assert_one_call(steps: &[thinklio_core::Step], what: &str) {
    let kinds: Vec<(thinklio_core::StepKind, thinklio_core::StepState)> =
        steps.iter().map(|s| (s.kind, s.state)).collect();
    let expected = ONE_CALL.map(|k| (k, thinklio_core::StepState::Succeeded));
    assert_eq!(kinds, expected, "{what}");
}

/// A model whose first call of each interaction (the last message the
/// user's) waits until `open` turns true; `on_wait` hears each wait with how
/// many have waited so far, so a test drives its next move from it.
pub struct Gated {
    model: Arc<dyn thinklio_core::ChatModel>,
    open: tokio::sync::watch::Receiver<bool>,
    waiting: std::sync::atomic::AtomicUsize,
    on_wait: Box<dyn Fn(usize) + Send + Sync>,
}

impl Gated {
    /// `model`'s answers, each first call held until `open` turns true.
    pub fn new(
        model: impl thinklio_core::ChatModel + 'static,
        open: tokio::sync::watch::Receiver<bool>,
        on_wait: impl Fn(usize) + Send + Sync + 'static,
    ) -> Self {
        Self {
            model: Arc::new(model),
            open,
            waiting: std::sync::atomic::AtomicUsize::new(0),
            on_wait: Box::new(on_wait),
        }
    }

    async fn gate(&self, request: &thinklio_core::ChatRequest) {
        let first = request
            .messages
            .last()
            .is_some_and(|m| m.role == thinklio_core::Role::User);
        if first && !*self.open.borrow() {
            let n = self
                .waiting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            (self.on_wait)(n);
            let mut open = self.open.clone();
            let _ = open.wait_for(|o| *o).await;
        }
    }
}

#[async_trait::async_trait]
impl thinklio_core::ChatModel for Gated {
    async fn chat(
        &self,
        request: &thinklio_core::ChatRequest,
    ) -> Result<thinklio_core::ChatResponse, thinklio_core::ModelError> {
        self.gate(request).await;
        self.model.chat(request).await
    }

    async fn chat_stream(
        &self,
        request: &thinklio_core::ChatRequest,
    ) -> Result<thinklio_core::ChatStream, thinklio_core::ModelError> {
        self.gate(request).await;
        self.model.chat_stream(request).await
    }
}
