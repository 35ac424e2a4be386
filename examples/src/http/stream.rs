//! A reply streamed as server-sent events.
//!
//! Events, each with a JSON body:
//! - `interaction` `{"interaction_id"}`: the message was recorded;
//! - `step` `{"step_id", "interaction_id", "kind", "state", "seq",
//!   "capability"?, "error_code"?, "input_tokens"?, "output_tokens"?,
//!   "cost_usd"?}` as each step starts (`started`) and ends
//!   (`succeeded` / `failed`);
//! - `token` `{"step_id", "text"}`: reply text as the model writes it;
//! - `reply`: the final [`ReplyView`], then the stream ends;
//! - `error` `{"code", "message"}` if the message could not be answered.
//!
//! The message is answered whether or not the client stays: a client that
//! goes away finds the reply in the session's history.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde_json::{Value, json};
use thinklio_core::{Event, EventKind, Inbound, Session, StepId, TokenDelta};
use tokio::sync::{broadcast, mpsc};

use super::HttpHost;
use super::api::ReplyView;
use super::error::ApiError;

fn sse(name: &str, data: &Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// The SSE form of a runtime event of the session, if it is one we show.
async fn step_event(host: &HttpHost, event: &Event) -> Option<SseEvent> {
    let state = match event.kind {
        EventKind::InteractionCreated => {
            return Some(sse(
                "interaction",
                &json!({ "interaction_id": event.interaction_id }),
            ));
        }
        EventKind::StepStarted => "started",
        EventKind::StepSucceeded => "succeeded",
        EventKind::StepFailed => "failed",
        _ => return None,
    };
    let step_id: StepId = event.step_id?;
    let p = &event.payload;
    let mut data = json!({
        "step_id": step_id,
        "interaction_id": event.interaction_id,
        "kind": p.get("kind"),
        "state": state,
        "seq": p.get("seq"),
    });
    if p.get("kind").and_then(Value::as_str) == Some("act")
        && let Ok(step) = host.runtime.store().step(step_id).await
    {
        data["capability"] = json!(step.capability);
    }
    for field in ["error_code", "input_tokens", "output_tokens"] {
        if let Some(v) = p.get(field) {
            data[field] = v.clone();
        }
    }
    if let Some(nanos) = p.get("cost_nanos").and_then(Value::as_i64) {
        data["cost_usd"] = json!(thinklio_core::Cost::from_nanos(nanos).as_usd());
    }
    Some(sse("step", &data))
}

fn token_event(t: &TokenDelta) -> SseEvent {
    sse("token", &json!({ "step_id": t.step_id, "text": t.text }))
}

/// Answers `inbound` in `session`, streaming what happens.
pub fn reply_stream(
    host: Arc<HttpHost>,
    session: Session,
    inbound: Inbound,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribed before the message is sent, so nothing is missed.
    let mut events = host.runtime.subscribe();
    let mut tokens = host.runtime.subscribe_tokens();
    let (tx, rx) = mpsc::channel::<SseEvent>(256);
    let runtime = host.runtime.clone();
    let session_id = session.id;
    let mut send = tokio::spawn(async move { runtime.send(session_id, inbound).await });
    tokio::spawn(async move {
        let mut open = true;
        loop {
            tokio::select! {
                biased;
                e = events.recv(), if open => match e {
                    Ok(e) if e.session_id == Some(session_id) => {
                        if let Some(ev) = step_event(&host, &e).await {
                            let _ = tx.send(ev).await;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => open = false,
                },
                t = tokens.recv(), if open => match t {
                    Ok(t) if t.session_id == session_id => {
                        let _ = tx.send(token_event(&t)).await;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => open = false,
                },
                done = &mut send => {
                    // What was published before the reply came back is sent first.
                    while let Ok(e) = events.try_recv() {
                        if e.session_id == Some(session_id)
                            && let Some(ev) = step_event(&host, &e).await
                        {
                            let _ = tx.send(ev).await;
                        }
                    }
                    while let Ok(t) = tokens.try_recv() {
                        if t.session_id == session_id {
                            let _ = tx.send(token_event(&t)).await;
                        }
                    }
                    let last = match done {
                        Ok(Ok(reply)) => sse("reply", &json!(ReplyView::from(&reply))),
                        Ok(Err(e)) => {
                            let e = ApiError::from(e);
                            sse("error", &json!({ "code": e.code, "message": e.message }))
                        }
                        Err(e) => sse("error", &json!({ "code": "host.task_failed", "message": e.to_string() })),
                    };
                    let _ = tx.send(last).await;
                    break;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok(ev), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Everything that happens in `session` from now on — steps, tokens and
/// every reply (`reply` carries an outbox message: answers and job
/// follow-ups) — until the client goes away.
pub fn session_stream(
    host: Arc<HttpHost>,
    session: Session,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut events = host.runtime.subscribe();
    let mut tokens = host.runtime.subscribe_tokens();
    let mut replies = host.channel.subscribe();
    let (tx, rx) = mpsc::channel::<SseEvent>(256);
    let session_id = session.id;
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                e = events.recv() => match e {
                    Ok(e) if e.session_id == Some(session_id) => step_event(&host, &e).await,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                t = tokens.recv() => match t {
                    Ok(t) if t.session_id == session_id => Some(token_event(&t)),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                r = replies.recv() => match r {
                    Ok(m) if m.session_id == session_id => Some(sse("reply", &json!({
                        "outbox_id": m.id,
                        "interaction_id": m.interaction_id,
                        "text": m.text,
                    }))),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = tx.closed() => break,
            };
            if let Some(ev) = next
                && tx.send(ev).await.is_err()
            {
                break;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok(ev), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
