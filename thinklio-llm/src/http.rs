//! What both HTTP providers share: sending with retries, turning error
//! responses into [`ModelError::Http`], and reading SSE streams.
//!
//! The retry loop is written here rather than taken from a backoff crate
//! because the delay of each attempt comes from the error itself
//! (`Retry-After`), which the common crates only support through callbacks
//! that are longer than this loop.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::{RequestBuilder, Response};
use thinklio_core::{ChatResponse, ModelError, StreamEvent};

/// Retries of one HTTP model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRetry {
    /// Retries after the first attempt (0 turns retrying off).
    pub max_retries: u32,
    /// The first backoff delay; each retry doubles it (with jitter).
    pub base_delay: Duration,
    /// The longest delay waited, whether computed or asked by `Retry-After`.
    /// A provider asking for longer gets its error returned instead.
    pub max_delay: Duration,
}

impl Default for HttpRetry {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl HttpRetry {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The delay before retry number `retry + 1`: the queue's exponential
    /// backoff with equal jitter.
    fn backoff(&self, retry: u32) -> Duration {
        thinklio_core::RetryPolicy {
            base: self.base_delay,
            max: self.max_delay,
        }
        .delay(retry + 1)
    }
}

/// Sends the request built by `build`, retrying retryable failures.
pub(crate) async fn send(
    retry: &HttpRetry,
    provider: &'static str,
    timeout: Duration,
    build: impl Fn() -> RequestBuilder,
) -> Result<Response, ModelError> {
    let mut attempt = 0u32;
    loop {
        let error = match build().send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => http_error(response).await,
            Err(e) => transport_error(e, timeout),
        };
        if !error.is_retryable() || attempt >= retry.max_retries {
            return Err(error);
        }
        let delay = match error.retry_after() {
            Some(asked) if asked > retry.max_delay => return Err(error),
            Some(asked) => asked,
            None => retry.backoff(attempt),
        };
        attempt += 1;
        tracing::warn!(
            provider,
            attempt,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = %error,
            "model call failed; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

pub(crate) fn transport_error(e: reqwest::Error, timeout: Duration) -> ModelError {
    if e.is_timeout() {
        ModelError::Timeout(timeout)
    } else if e.is_decode() || e.is_body() {
        ModelError::MalformedResponse(e.to_string())
    } else {
        ModelError::Transport(Box::new(e))
    }
}

/// The most bytes of an error response read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

async fn read_limited(response: Response, max: usize) -> String {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = max.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() >= room {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Turns an error response into [`ModelError::Http`], keeping status and
/// headers; the message is the provider's `error.message` when the body is
/// the usual JSON, the body text otherwise.
pub(crate) async fn http_error(response: Response) -> ModelError {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    // An error body is read only so far: a provider (or a proxy in front
    // of one) cannot make the runtime hold a huge page in memory.
    let body = read_limited(response, ERROR_BODY_LIMIT).await;
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(500).collect());
    ModelError::Http {
        status,
        headers,
        message,
    }
}

/// The `data` payloads of an SSE response, with the event name.
pub(crate) fn sse(response: Response) -> impl Stream<Item = Result<(String, String), ModelError>> {
    without_bom(response.bytes_stream())
        .eventsource()
        .map(|event| match event {
            Ok(e) => Ok((e.event, e.data)),
            Err(e) => Err(ModelError::MalformedResponse(format!("event stream: {e}"))),
        })
}

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A body's bytes without a leading UTF-8 byte-order mark, even one split
/// across chunks. The SSE standard says to drop it; `eventsource-stream`
/// tries to, but slices it off by one byte and panics, so a server that
/// sends one would bring the host down. Written here because it is the
/// only guard that stream needs.
pub(crate) fn without_bom<S, E>(stream: S) -> impl Stream<Item = Result<bytes::Bytes, E>>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    // The state: the stream, and the first bytes held back until there are
    // enough to tell whether they are a mark (`None` once decided).
    futures::stream::unfold(
        (stream, Some(Vec::<u8>::new())),
        |(mut stream, mut head)| async move {
            let Some(held) = head.as_mut() else {
                let next = stream.next().await?;
                return Some((next, (stream, None)));
            };
            while held.len() < BOM.len() && BOM.starts_with(held) {
                match stream.next().await {
                    Some(Ok(chunk)) => held.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (stream, head))),
                    None => break,
                }
            }
            let held = head.take().unwrap_or_default();
            let rest = held.strip_prefix(BOM).unwrap_or(&held);
            Some((Ok(bytes::Bytes::copy_from_slice(rest)), (stream, None)))
        },
    )
}

/// Where a provider sends its requests, and how: the client, the base URL,
/// retries and the read timeout.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    provider: &'static str,
    client: Result<reqwest::Client, String>,
    base_url: String,
    pub(crate) retry: HttpRetry,
    pub(crate) timeout: Duration,
}

impl Endpoint {
    pub(crate) fn new(provider: &'static str, base_url: String) -> Self {
        let timeout = Duration::from_secs(120);
        Self {
            provider,
            client: client(timeout),
            base_url,
            retry: HttpRetry::default(),
            timeout,
        }
    }

    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.client = client(timeout);
    }

    /// POSTs `body` as JSON to `path` with `headers`, retrying per policy.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(reqwest::header::HeaderName, reqwest::header::HeaderValue)],
    ) -> Result<Response, ModelError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| ModelError::Config(e.clone()))?;
        let url = join(&self.base_url, path);
        send(&self.retry, self.provider, self.timeout, || {
            let mut req = client.post(&url).json(body);
            for (name, value) in headers {
                req = req.header(name, value.clone());
            }
            req
        })
        .await
    }

    /// The whole body of a response, as text.
    pub(crate) async fn text(&self, response: Response) -> Result<String, ModelError> {
        response
            .text()
            .await
            .map_err(|e| transport_error(e, self.timeout))
    }
}

fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A header carrying a secret: marked sensitive, so it is never printed.
pub(crate) fn secret_header(value: String) -> Result<reqwest::header::HeaderValue, ModelError> {
    let mut v = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
        ModelError::Config("the API key contains characters not allowed in a header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A header from configuration strings.
pub(crate) fn header(
    name: &str,
    value: &str,
) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), ModelError> {
    let bad = || ModelError::Config(format!("`{name}: {value}` is not a valid HTTP header"));
    Ok((
        reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?,
        reqwest::header::HeaderValue::from_str(value).map_err(|_| bad())?,
    ))
}

fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Turns a provider's SSE events into [`StreamEvent`]s.
pub(crate) trait StreamAssembler: Send + 'static {
    /// Feeds one event; pushes what it yields to `out`; returns whether the
    /// answer is complete.
    fn feed(
        &mut self,
        event: &str,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) -> Result<bool, ModelError>;

    /// The assembled answer.
    fn finish(self) -> ChatResponse;
}

/// Drives an assembler over an SSE stream: its events, then
/// [`StreamEvent::Done`]. A stream that ends without its end marker finishes
/// with what arrived; an error ends the stream.
pub(crate) fn assemble<A: StreamAssembler>(
    events: impl Stream<Item = Result<(String, String), ModelError>> + Send + 'static,
    assembler: A,
) -> impl Stream<Item = Result<StreamEvent, ModelError>> + Send + 'static {
    let state = Some((Box::pin(events), assembler));
    futures::stream::unfold(state, |state| async move {
        let (mut events, mut assembler) = state?;
        loop {
            let mut out = Vec::new();
            let done = match events.next().await {
                None => true,
                Some(Err(e)) => return Some((vec![Err(e)], None)),
                Some(Ok((event, data))) => match assembler.feed(&event, &data, &mut out) {
                    Ok(done) => done,
                    Err(e) => return Some((vec![Err(e)], None)),
                },
            };
            let mut items: Vec<Result<StreamEvent, ModelError>> = out.into_iter().map(Ok).collect();
            if done {
                items.push(Ok(StreamEvent::Done(assembler.finish())));
                return Some((items, None));
            }
            if !items.is_empty() {
                return Some((items, Some((events, assembler))));
            }
        }
    })
    .flat_map(futures::stream::iter)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn through(chunks: &[&[u8]]) -> Vec<u8> {
        let stream = futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let mut out = Vec::new();
        let mut s = std::pin::pin!(without_bom(stream));
        while let Some(Ok(chunk)) = s.next().await {
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[tokio::test]
    async fn a_leading_byte_order_mark_is_dropped_even_split_across_chunks() {
        assert_eq!(through(&[b"\xEF\xBB\xBFdata: 1\n\n"]).await, b"data: 1\n\n");
        assert_eq!(
            through(&[b"\xEF", b"\xBB", b"\xBFdata: 1"]).await,
            b"data: 1"
        );
        assert_eq!(through(&[b"\xEF\xBB\xBF"]).await, b"");
        // Anything else passes unchanged, a mark later on too.
        assert_eq!(
            through(&[b"da", b"ta\xEF\xBB\xBF"]).await,
            b"data\xEF\xBB\xBF"
        );
        assert_eq!(through(&[b"\xEF\xBBx"]).await, b"\xEF\xBBx");
        assert_eq!(through(&[]).await, b"");
    }
}
