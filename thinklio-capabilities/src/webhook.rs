//! HTTP webhooks as capabilities.
//!
//! A call is a `POST` of the arguments as JSON. The request carries:
//! - `X-Thinklio-Timestamp: <Unix seconds>`, when it was signed;
//! - `X-Thinklio-Signature: sha256=<hex>`, the HMAC-SHA256 under the
//!   capability's secret of the timestamp, a `.`, and the exact body bytes,
//!   so the receiver can check that the call comes from this runtime, was
//!   not altered, and is not an old request played again: [`verify`] does
//!   all three, with a tolerance for clock skew;
//! - `X-Thinklio-Idempotency-Key`, stable across attempts of one call, so the
//!   receiver can de-duplicate;
//! - `X-Thinklio-Interaction` and `X-Thinklio-Attempt`.
//!
//! A 2xx answer is the result: its JSON body, or its text as a JSON string.
//! At most [`WebhookCapability::max_response_bytes`] of an answer are read
//! (1 MiB by default); a longer one fails the call.
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

/// The request header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-thinklio-signature";

/// The request header carrying when the request was signed (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-thinklio-timestamp";

/// How far a signed timestamp may be from a receiver's clock by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The most bytes of a webhook's answer read by default.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

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

/// The signature header value of a request signed at `timestamp` (Unix
/// seconds) with `body`, under `secret`: `sha256=<hex>` of the HMAC-SHA256
/// of `"{timestamp}."` followed by the body bytes.
pub fn sign(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> String {
    match mac(secret, timestamp, body) {
        Some(mac) => format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        // HMAC accepts keys of any length, so this does not happen; an
        // empty signature is one no receiver accepts.
        None => String::new(),
    }
}

fn mac(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Why a receiver refused a signed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The timestamp header is missing or not a number of seconds.
    #[error("the request's timestamp is missing or malformed")]
    BadTimestamp,
    /// The request was signed too long ago (or too far in the future):
    /// an old request played again.
    #[error("the request was signed {seconds} s away from now, more than the tolerance")]
    OutsideTolerance {
        /// How far from now, in seconds.
        seconds: u64,
    },
    /// The signature is missing, malformed or does not match.
    #[error("the request's signature does not match")]
    BadSignature,
}

/// Checks a signed request as a receiver: the headers' values
/// (`X-Thinklio-Timestamp`, `X-Thinklio-Signature`), the raw body, the
/// receiver's clock (Unix seconds) and how far from it a timestamp may be
/// ([`DEFAULT_TOLERANCE`] is five minutes). The signature is compared in
/// constant time. A receiver that also keeps the idempotency keys (or
/// notification ids) it saw within the tolerance refuses every replay.
///
/// ```
/// use std::time::Duration;
/// use thinklio_capabilities::{WebhookSecret, sign, verify};
/// let secret = WebhookSecret::new("a long random secret");
/// let body = br#"{"title":"printer on fire"}"#;
/// let signature = sign(&secret, 1_790_000_000, body);
/// assert!(verify(&secret, "1790000000", &signature, body, 1_790_000_030, Duration::from_secs(300)).is_ok());
/// assert!(verify(&secret, "1790000000", &signature, body, 1_790_009_000, Duration::from_secs(300)).is_err());
/// ```
pub fn verify(
    secret: &WebhookSecret,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let signed: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let seconds = now.abs_diff(signed);
    if seconds > tolerance.as_secs() {
        return Err(SignatureError::OutsideTolerance { seconds });
    }
    let given = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::BadSignature)?;
    mac(secret, signed, body)
        .ok_or(SignatureError::BadSignature)?
        .verify_slice(&given)
        .map_err(|_| SignatureError::BadSignature)
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
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
    max_response_bytes: usize,
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
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Sets the most bytes of an answer read ([`DEFAULT_MAX_RESPONSE_BYTES`]
    /// by default); a longer answer fails the call.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
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
    ) -> Result<(u16, Value), (CapabilityError, bool)> {
        // Signed at each attempt, so a retry is as fresh as a first call.
        let timestamp = unix_now();
        let signature = sign(&self.secret, timestamp, body);
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
            .header(TIMESTAMP_HEADER, timestamp.to_string())
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
        let (bytes, longer) = crate::outbound::read_limited(response, self.max_response_bytes)
            .await
            .map_err(|e| {
                (
                    CapabilityError::failed(format!("the webhook's answer could not be read: {e}")),
                    true,
                )
            })?;
        if longer && status.is_success() {
            return Err((
                CapabilityError::InvalidResult(format!(
                    "the webhook's answer is longer than {} bytes",
                    self.max_response_bytes
                )),
                false,
            ));
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
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
        let retries = if self.manifest.side_effect.is_repeatable() {
            self.retries
        } else {
            0
        };
        let mut tried = 0;
        loop {
            match self.attempt(client, context, &body).await {
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
/// (`X-Thinklio-Timestamp`, `X-Thinklio-Signature`; check them with
/// [`verify`]), with `X-Thinklio-Notification-Id` for de-duplication. The
/// answer's body is never read. One attempt per delivery; the runtime
/// retries a failed one with backoff.
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
        let timestamp = unix_now();
        let response = client
            .post(url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, sign(&self.secret, timestamp, &body))
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
