//! A reply streamed as server-sent events.
//!
//! Events, each with a JSON body:
//! - `interaction` `{"interaction_id"}`: the message was recorded;
//! - `step` `{"step_id", "interaction_id", "kind", "state", "seq",
//!   "capability"?, "error_code"?, "input_tokens"?, "output_tokens"?,
//!   "cost_usd"?}` as each step starts (`started`) and ends
//!   (`succeeded` / `failed`);
//! - `token` `{"step_id", "text"}`: reply text as the model writes it;
//! - `approval` `{"step_id", "interaction_id", "state", "capability"?,
//!   "arguments"?, "decision"?}`: a call waits for a decision (`requested`,
//!   with its capability and arguments: decide it with `POST
//!   /v1/approvals/{step_id}`) or was decided (`decided`);
//! - `reply`: the final [`ReplyView`], then the stream ends;
//! - `error` `{"code", "message"}` if the message could not be answered;
//! - `lagged` `{"missed"}`: the stream fell behind and missed that many
//!   updates (read the history and steps to catch up).
//!
//! Each stream subscribes to its own session
//! ([`Runtime::subscribe_session`](thinklio_core::Runtime::subscribe_session)):
//! it never receives another session's updates.
//!
//! The message is answered whether or not the client stays: a client that
//! goes away finds the reply in the session's history.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde_json::{Value, json};
use thinklio_core::event::{ApprovalDecided, ApprovalRequested, StepEvent};
use thinklio_core::{EventKind, Inbound, Session, SessionUpdate, StepKind};
use tokio::sync::{broadcast, mpsc};

use super::HttpHost;
use super::api::ReplyView;
use super::error::ApiError;

fn sse(name: &str, data: &Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// What one update of the session becomes on the stream.
#[derive(Debug, PartialEq)]
enum Shown {
    /// An event to send as it is.
    Event(&'static str, Value),
    /// A step event (an `act` step's with its capability).
    Step { data: Value },
    /// Nothing to show.
    Skip,
    /// The runtime is gone: the stream ends.
    Closed,
}

/// The stream's view of what the session's subscription said. A stream
/// that fell behind is told how many updates it missed (`lagged`), so a
/// client knows to read the history and steps again.
fn shown(update: Result<SessionUpdate, broadcast::error::RecvError>) -> Shown {
    let event = match update {
        Ok(SessionUpdate::Token(t)) => {
            return Shown::Event("token", json!({ "step_id": t.step_id, "text": t.text }));
        }
        Ok(SessionUpdate::Event(e)) => e,
        Ok(_) => return Shown::Skip,
        Err(broadcast::error::RecvError::Lagged(missed)) => {
            return Shown::Event("lagged", json!({ "missed": missed }));
        }
        Err(broadcast::error::RecvError::Closed) => return Shown::Closed,
    };
    let state = match event.kind {
        EventKind::InteractionCreated => {
            return Shown::Event(
                "interaction",
                json!({ "interaction_id": event.interaction_id }),
            );
        }
        EventKind::ApprovalRequested | EventKind::ApprovalDecided => {
            let mut data = json!({
                "step_id": event.step_id,
                "interaction_id": event.interaction_id,
            });
            if event.kind == EventKind::ApprovalRequested {
                let Ok(p) = serde_json::from_value::<ApprovalRequested>(event.payload) else {
                    return Shown::Skip;
                };
                data["state"] = json!("requested");
                data["capability"] = json!(p.step.capability);
                data["arguments"] = p.arguments;
            } else {
                let Ok(p) = serde_json::from_value::<ApprovalDecided>(event.payload) else {
                    return Shown::Skip;
                };
                data["state"] = json!("decided");
                data["decision"] = json!(p.decision.as_str());
            }
            return Shown::Event("approval", data);
        }
        EventKind::StepStarted => "started",
        EventKind::StepSucceeded => "succeeded",
        EventKind::StepFailed => "failed",
        // A call to a delegate waits with the delegate's proposals.
        EventKind::StepWaiting => "waiting",
        _ => return Shown::Skip,
    };
    let Some(step_id) = event.step_id else {
        return Shown::Skip;
    };
    let Ok(p) = serde_json::from_value::<StepEvent>(event.payload) else {
        return Shown::Skip;
    };
    let mut data = json!({
        "step_id": step_id,
        "interaction_id": event.interaction_id,
        "kind": p.kind,
        "state": state,
        "seq": p.seq,
    });
    if let Some(code) = p.error_code {
        data["error_code"] = json!(code);
    }
    if let Some(n) = p.input_tokens {
        data["input_tokens"] = json!(n);
    }
    if let Some(n) = p.output_tokens {
        data["output_tokens"] = json!(n);
    }
    if let Some(nanos) = p.cost_nanos {
        data["cost_usd"] = json!(thinklio_core::Cost::from_nanos(nanos).as_usd());
    }
    if p.kind == StepKind::Act {
        data["capability"] = json!(p.capability);
    }
    Shown::Step { data }
}

/// The SSE event of an update, if it shows one; `Err` when the stream ends.
fn sse_of(
    update: Result<SessionUpdate, broadcast::error::RecvError>,
) -> Result<Option<SseEvent>, ()> {
    Ok(match shown(update) {
        Shown::Event(name, data) => Some(sse(name, &data)),
        Shown::Step { data } => Some(sse("step", &data)),
        Shown::Skip => None,
        Shown::Closed => return Err(()),
    })
}

/// Answers `inbound` in `session`, streaming what happens.
pub fn reply_stream(
    host: Arc<HttpHost>,
    session: Session,
    inbound: Inbound,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribed before the message is sent, so nothing is missed.
    let mut updates = host.runtime.subscribe_session(session.id);
    let (tx, rx) = mpsc::channel::<SseEvent>(256);
    let runtime = host.runtime.clone();
    let session_id = session.id;
    let mut send = tokio::spawn(async move { runtime.send(session_id, inbound).await });
    tokio::spawn(async move {
        let mut open = true;
        loop {
            tokio::select! {
                biased;
                u = updates.recv(), if open => match sse_of(u) {
                    Ok(Some(ev)) => { let _ = tx.send(ev).await; }
                    Ok(None) => {}
                    Err(()) => open = false,
                },
                done = &mut send => {
                    // What was published before the reply came back is sent first.
                    loop {
                        match updates.try_recv() {
                            Ok(u) => {
                                if let Ok(Some(ev)) = sse_of(Ok(u)) {
                                    let _ = tx.send(ev).await;
                                }
                            }
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                if let Ok(Some(ev)) = sse_of(Err(broadcast::error::RecvError::Lagged(n))) {
                                    let _ = tx.send(ev).await;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    let last = match done {
                        Ok(Ok(reply)) => sse("reply", &json!(ReplyView::from(&reply))),
                        Ok(Err(e)) => {
                            let e = ApiError::from(e);
                            sse("error", &json!({ "code": e.code, "message": e.message }))
                        }
                        Err(e) => {
                            let e = ApiError::internal("host.task_failed", &e);
                            sse("error", &json!({ "code": e.code, "message": e.message }))
                        }
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
    let mut updates = host.runtime.subscribe_session(session.id);
    let mut replies = host.channel.subscribe(session.id);
    let (tx, rx) = mpsc::channel::<SseEvent>(256);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                u = updates.recv() => match sse_of(u) {
                    Ok(ev) => ev,
                    Err(()) => break,
                },
                r = replies.recv() => match r {
                    Ok(m) => Some(sse("reply", &json!({
                        "outbox_id": m.id,
                        "interaction_id": m.interaction_id,
                        "text": m.text,
                    }))),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Some(sse("lagged", &json!({ "missed_replies": missed })))
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use thinklio_core::{Event, InteractionId, SessionId, Timestamp};

    #[test]
    fn a_stream_that_fell_behind_is_told_what_it_missed() {
        let (tx, mut rx) = broadcast::channel(2);
        let session = SessionId::new();
        let interactions: Vec<InteractionId> = (0..4).map(|_| InteractionId::new()).collect();
        for (seq, id) in interactions.iter().enumerate() {
            tx.send(SessionUpdate::Event(Event {
                seq: seq as i64,
                kind: EventKind::InteractionCreated,
                session_id: Some(session),
                interaction_id: Some(*id),
                step_id: None,
                payload: Value::Null,
                at: Timestamp::from_millis(0),
            }))
            .unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            let next = match rx.try_recv() {
                Ok(u) => Ok(u),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(e) => panic!("{e}"),
            };
            seen.push(shown(next));
        }
        let created =
            |id: InteractionId| Shown::Event("interaction", json!({ "interaction_id": id }));
        assert_eq!(
            seen,
            [
                Shown::Event("lagged", json!({ "missed": 2 })),
                created(interactions[2]),
                created(interactions[3]),
            ]
        );
        drop(tx);
        assert_eq!(
            shown(Err(broadcast::error::RecvError::Closed)),
            Shown::Closed
        );
    }
}
