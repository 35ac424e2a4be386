//! HTTP webhooks as capabilities.
//!
//! A call is a `POST` of the arguments as JSON. The request carries:
//! - `X-Thinklio-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact body
//!   bytes under the capability's secret, so the receiver can check that the
//!   call comes from this runtime and was not altered;
//! - `X-Thinklio-Idempotency-Key`, stable across attempts of one call, so the
//!   receiver can de-duplicate;
//! - `X-Thinklio-Interaction` and `X-Thinklio-Attempt`.
//!
//! A 2xx answer is the result: its JSON body, or its text as a JSON string.
//!
//! Dispatched as a job (deferred mode), the same request also carries
//! `X-Thinklio-Job`, and, when the runtime has job callbacks,
//! `X-Thinklio-Callback-Url` and `X-Thinklio-Callback-Token`: a `202
//! Accepted` answer hands the work over, and the receiver reports progress
//! and the result to the callback URL later (any other 2xx answer is the
//! result at once). [`SignedNoticeWebhook`] posts job notices to webhook
//! observers, signed the same way.
//! Anything else fails the call with the status and the start of the body.
//! Only `read_only` and `idempotent` webhooks are retried (on 408, 429, 5xx
//! and transport errors, with exponential backoff and jitter); an `external`
//! webhook is called at most once per attempt of its step.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use thinklio_core::{
    Capability, CapabilityError, CapabilityKind, CapabilityManifest, Dispatch, InvocationContext,
    JobNotice, NoticeWebhook, RetryPolicy, SideEffect, StepMode, TrustLevel,
};

/// The request header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-thinklio-signature";

/// A webhook's signing secret. Its `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// The signature header value of `body` under `secret`: `sha256=<hex>`.
/// Receivers compute the same over the raw body and compare in constant time.
pub fn sign(secret: &WebhookSecret, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC is
    // the fallback that no receiver would accept.
    match Hmac::<Sha256>::new_from_slice(&secret.0) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// An HTTP endpoint as a capability.
///
/// ```
/// use serde_json::json;
/// use thinklio_capabilities::{WebhookCapability, WebhookSecret};
/// use thinklio_core::SideEffect;
///
/// let create_ticket = WebhookCapability::new(
///     "create_ticket",
///     "Opens a support ticket.",
///     "https://tickets.example.com/hooks/thinklio",
///     WebhookSecret::new("a long random secret"),
/// )
/// .parameters(json!({
///     "type": "object",
///     "properties": { "title": { "type": "string" } },
///     "required": ["title"]
/// }))
/// .returns(json!({ "type": "object", "properties": { "id": { "type": "string" } }, "required": ["id"] }))
/// .side_effect(SideEffect::External);
/// # let _ = create_ticket;
/// ```
#[derive(Debug, Clone)]
pub struct WebhookCapability {
    manifest: CapabilityManifest,
    url: String,
    secret: WebhookSecret,
    client: Result<reqwest::Client, String>,
    retries: u32,
    backoff: Duration,
}

impl WebhookCapability {
    /// A webhook at `url`, signed with `secret`. Defaults: any object as
    /// arguments, `external` (never retried), standard trust, 30 s timeout.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        url: impl Into<String>,
        secret: WebhookSecret,
    ) -> Self {
        let mut manifest = CapabilityManifest::new(
            name,
            description,
            CapabilityKind::Webhook,
            serde_json::json!({ "type": "object" }),
        );
        manifest.side_effect = SideEffect::External;
        Self {
            manifest,
            url: url.into(),
            secret,
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}")),
            retries: 3,
            backoff: Duration::from_millis(250),
        }
    }

    /// Sets the parameter schema.
    pub fn parameters(mut self, schema: Value) -> Self {
        self.manifest.parameters = schema;
        self
    }

    /// Sets the return schema the response body must match.
    pub fn returns(mut self, schema: Value) -> Self {
        self.manifest.returns = Some(schema);
        self
    }

    /// Sets the side-effect class; only `read_only` and `idempotent` are retried.
    pub fn side_effect(mut self, side_effect: SideEffect) -> Self {
        self.manifest.side_effect = side_effect;
        self
    }

    /// Sets the trust level a caller needs.
    pub fn trust_level(mut self, level: TrustLevel) -> Self {
        self.manifest.trust_level = level;
        self
    }

    /// Sets the timeout of one HTTP request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.manifest.timeout = timeout;
        self
    }

    /// Sets whether calls run now or as jobs (deferred: see the module
    /// documentation for the callback contract).
    pub fn default_mode(mut self, mode: StepMode) -> Self {
        self.manifest.default_mode = mode;
        self
    }

    /// Sets how many times a retryable webhook is retried, and the first delay.
    pub fn retries(mut self, retries: u32, first_delay: Duration) -> Self {
        self.retries = retries;
        self.backoff = first_delay;
        self
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        context: &InvocationContext,
        body: &[u8],
        signature: &str,
    ) -> Result<(u16, Value), (CapabilityError, bool)> {
        let mut request = client.post(&self.url);
        if let Some(job) = &context.job {
            request = request.header("x-thinklio-job", job.id().to_string());
            if let Some(callback) = job.callback() {
                request = request
                    .header("x-thinklio-callback-url", callback.url())
                    .header("x-thinklio-callback-token", callback.token());
            }
        }
        let response = request
            .timeout(self.manifest.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header("x-thinklio-idempotency-key", &context.idempotency_key)
            .header("x-thinklio-interaction", context.interaction_id.to_string())
            .header("x-thinklio-attempt", context.attempt.to_string())
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| {
                let error = if e.is_timeout() {
                    CapabilityError::Timeout(self.manifest.timeout)
                } else {
                    CapabilityError::failed(format!("the webhook could not be reached: {e}"))
                };
                (error, true)
            })?;
        let status = response.status();
        let json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let text = response.text().await.map_err(|e| {
            (
                CapabilityError::failed(format!("the webhook's answer could not be read: {e}")),
                true,
            )
        })?;
        if !status.is_success() {
            let retryable =
                status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error();
            let snippet: String = text.chars().take(300).collect();
            return Err((
                CapabilityError::failed(format!(
                    "the webhook answered HTTP {}: {snippet}",
                    status.as_u16()
                )),
                retryable,
            ));
        }
        let value = if json {
            serde_json::from_str(&text).map_err(|e| {
                (
                    CapabilityError::InvalidResult(format!(
                        "the webhook's JSON answer is malformed: {e}"
                    )),
                    false,
                )
            })?
        } else {
            Value::String(text)
        };
        Ok((status.as_u16(), value))
    }

    /// Posts the call, retrying a repeatable webhook; the status and body of
    /// the 2xx answer.
    async fn call(
        &self,
        context: &InvocationContext,
        arguments: &Value,
    ) -> Result<(u16, Value), CapabilityError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| CapabilityError::failed(e.clone()))?;
        let body = serde_json::to_vec(arguments)
            .map_err(|e| CapabilityError::InvalidArguments(e.to_string()))?;
        let signature = sign(&self.secret, &body);
        let retries = if self.manifest.side_effect.is_repeatable() {
            self.retries
        } else {
            0
        };
        let mut tried = 0;
        loop {
            match self.attempt(client, context, &body, &signature).await {
                Ok(answer) => return Ok(answer),
                Err((error, retryable)) if retryable && tried < retries => {
                    let delay = RetryPolicy {
                        base: self.backoff,
                        max: Duration::from_secs(60),
                    }
                    .delay(tried + 1);
                    tried += 1;
                    tracing::warn!(webhook = %self.manifest.name, attempt = tried, error = %error, "webhook call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
}

#[async_trait]
impl Capability for WebhookCapability {
    fn manifest(&self) -> &CapabilityManifest {
        &self.manifest
    }

    async fn invoke(
        &self,
        context: &InvocationContext,
        arguments: Value,
    ) -> Result<Value, CapabilityError> {
        self.call(context, &arguments).await.map(|(_, value)| value)
    }

    async fn dispatch(
        &self,
        context: &InvocationContext,
        arguments: Value,
    ) -> Result<Dispatch, CapabilityError> {
        if context.job.as_ref().is_some_and(|j| j.callback().is_none()) {
            return Err(CapabilityError::failed(
                "a webhook runs as a job only when the runtime has job callbacks \
                 (RuntimeBuilder::job_callbacks) to report back to",
            ));
        }
        match self.call(context, &arguments).await? {
            (202, _) => Ok(Dispatch::Accepted),
            (_, value) => Ok(Dispatch::Done(value)),
        }
    }
}

/// Posts job notices to [`ObserverKind::Webhook`](thinklio_core::ObserverKind)
/// observers: the [`JobNotice`] as JSON, signed like webhook calls
/// (`X-Thinklio-Signature`), with `X-Thinklio-Notification-Id` for
/// de-duplication. One attempt per delivery; the runtime retries a failed
/// one with backoff.
#[derive(Debug, Clone)]
pub struct SignedNoticeWebhook {
    secret: WebhookSecret,
    client: Result<reqwest::Client, String>,
    timeout: Duration,
}

impl SignedNoticeWebhook {
    /// Notices signed with `secret`, each request limited to 10 s.
    pub fn new(secret: WebhookSecret) -> Self {
        Self {
            secret,
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}")),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets the timeout of one request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl NoticeWebhook for SignedNoticeWebhook {
    async fn post(&self, url: &str, notice: &JobNotice) -> Result<(), String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let body = serde_json::to_vec(notice).map_err(|e| e.to_string())?;
        let response = client
            .post(url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(&self.secret, &body))
            .header(
                "x-thinklio-notification-id",
                notice.notification_id.to_string(),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| format!("the observer webhook could not be reached: {e}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "the observer webhook answered HTTP {}",
                status.as_u16()
            ))
        }
    }
}
