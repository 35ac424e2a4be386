//! Built-in capabilities useful to most agents: a clock, a web-page fetch
//! and a durable per-user todo list on the store.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thinklio_core::{Clock, FunctionCapability, SideEffect, SystemClock, TodoStore, TrustLevel};

use crate::outbound::{OutboundPolicy, read_limited, refusal};

#[derive(Deserialize, JsonSchema)]
struct ClockArgs {}

/// `clock`: the current date and time in UTC, RFC 3339.
pub fn clock() -> FunctionCapability {
    FunctionCapability::builder("clock", "The current date and time in UTC (RFC 3339).")
        .side_effect(SideEffect::ReadOnly)
        .trust_level(TrustLevel::Basic)
        .handler(|_: ClockArgs| async move { Ok::<_, String>(jiff::Timestamp::now().to_string()) })
}

/// The most bytes `web_fetch` reads of a page.
pub const WEB_FETCH_MAX_BYTES: usize = 1024 * 1024;

/// The most characters of text `web_fetch` returns.
pub const WEB_FETCH_MAX_CHARS: usize = 20_000;

#[derive(Deserialize, JsonSchema)]
struct FetchArgs {
    /// The page's http or https URL.
    url: String,
}

/// What `web_fetch` returns.
#[derive(Serialize, JsonSchema)]
struct Fetched {
    /// The URL fetched.
    url: String,
    /// The HTTP status.
    status: u16,
    /// The page's content type.
    content_type: String,
    /// The page's text (HTML converted to plain text).
    text: String,
    /// Whether the page was cut at the size limits.
    truncated: bool,
}

/// `web_fetch`: fetches a page over HTTP(S) and returns its text. Reads at
/// most [`WEB_FETCH_MAX_BYTES`], returns at most [`WEB_FETCH_MAX_CHARS`],
/// converts HTML to plain text and refuses binary content. Only public
/// addresses are fetched, redirects included ([`OutboundPolicy::public_only`]);
/// [`web_fetch_with`] allows more.
pub fn web_fetch() -> FunctionCapability {
    web_fetch_with(OutboundPolicy::public_only())
}

/// `web_fetch` that may also reach what `policy` allows (an intranet host,
/// a private network).
pub fn web_fetch_with(policy: OutboundPolicy) -> FunctionCapability {
    let client = policy
        .client(Duration::from_secs(20), 5)
        .map_err(|e| e.to_string());
    let fetcher = Arc::new((policy, client));
    FunctionCapability::builder("web_fetch", "Fetches a web page and returns its text.")
        .side_effect(SideEffect::ReadOnly)
        .trust_level(TrustLevel::Standard)
        .timeout(Duration::from_secs(30))
        .handler(move |args: FetchArgs| {
            let fetcher = Arc::clone(&fetcher);
            async move {
                let (policy, client) = fetcher.as_ref();
                fetch(policy, client.as_ref().map_err(Clone::clone)?, args.url).await
            }
        })
}

async fn fetch(
    policy: &OutboundPolicy,
    client: &reqwest::Client,
    url: String,
) -> Result<Fetched, String> {
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "only http and https URLs can be fetched, not `{}`",
            parsed.scheme()
        ));
    }
    policy.check_url(&parsed).map_err(|e| e.to_string())?;
    let response = client
        .get(parsed)
        .send()
        .await
        .map_err(|e| match refusal(&e) {
            Some(refused) => refused.to_string(),
            None => format!("could not fetch {url}: {e}"),
        })?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let textual = content_type.is_empty()
        || content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml");
    if !textual {
        return Err(format!("{url} is `{content_type}`, not text"));
    }
    let (body, mut truncated) = read_limited(response, WEB_FETCH_MAX_BYTES)
        .await
        .map_err(|e| format!("reading {url} failed: {e}"))?;
    let text = if content_type.contains("html") {
        html2text::from_read(body.as_slice(), 100)
            .map_err(|e| format!("could not read the HTML of {url}: {e}"))?
    } else {
        String::from_utf8_lossy(&body).into_owned()
    };
    let mut text = text.trim().to_owned();
    if let Some((cut, _)) = text.char_indices().nth(WEB_FETCH_MAX_CHARS) {
        text.truncate(cut);
        truncated = true;
    }
    Ok(Fetched {
        url,
        status,
        content_type,
        text,
        truncated,
    })
}

#[derive(Deserialize, JsonSchema)]
struct TodoAdd {
    /// What to do.
    text: String,
}

#[derive(Deserialize, JsonSchema)]
struct TodoList {
    /// Include items already done.
    #[serde(default)]
    include_done: bool,
}

#[derive(Deserialize, JsonSchema)]
struct TodoDone {
    /// The item's number in the list.
    number: i64,
}

/// An item as the model sees it.
#[derive(Serialize, JsonSchema)]
struct Item {
    number: i64,
    text: String,
    done: bool,
}

impl From<thinklio_core::Todo> for Item {
    fn from(t: thinklio_core::Todo) -> Self {
        Self {
            number: t.number,
            text: t.text,
            done: t.done_at.is_some(),
        }
    }
}

/// `todo_add`, `todo_list` and `todo_done`: the calling user's todo list,
/// durable on `store`. Each call acts for the interaction's principal only;
/// adding is idempotent on the call's idempotency key.
pub fn todo_list(store: Arc<dyn TodoStore>) -> Vec<FunctionCapability> {
    let add_store = Arc::clone(&store);
    let add = FunctionCapability::builder("todo_add", "Adds an item to the user's todo list.")
        .side_effect(SideEffect::Idempotent)
        .trust_level(TrustLevel::Basic)
        .handler_with_context(move |ctx, args: TodoAdd| {
            let store = Arc::clone(&add_store);
            async move {
                let p = ctx.principal;
                store
                    .add_todo(p.account, p.user, &args.text, &ctx.idempotency_key)
                    .await
                    .map(Item::from)
                    .map_err(|e| e.to_string())
            }
        });
    let list_store = Arc::clone(&store);
    let list = FunctionCapability::builder("todo_list", "Lists the user's todo items.")
        .side_effect(SideEffect::ReadOnly)
        .trust_level(TrustLevel::Basic)
        .handler_with_context(move |ctx, args: TodoList| {
            let store = Arc::clone(&list_store);
            async move {
                let p = ctx.principal;
                store
                    .todos(p.account, p.user, args.include_done)
                    .await
                    .map(|items| items.into_iter().map(Item::from).collect::<Vec<_>>())
                    .map_err(|e| e.to_string())
            }
        });
    let done =
        FunctionCapability::builder("todo_done", "Marks an item of the user's todo list done.")
            .side_effect(SideEffect::Idempotent)
            .trust_level(TrustLevel::Basic)
            .handler_with_context(move |ctx, args: TodoDone| {
                let store = Arc::clone(&store);
                async move {
                    let p = ctx.principal;
                    store
                        .complete_todo(p.account, p.user, args.number, SystemClock.now())
                        .await
                        .map(Item::from)
                        .map_err(|e| e.to_string())
                }
            });
    vec![add, list, done]
}
