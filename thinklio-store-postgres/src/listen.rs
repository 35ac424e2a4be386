//! Wakes idle workers when another process adds work: writers announce it
//! with `pg_notify` in the transaction that adds it (delivered at commit),
//! and one connection per store LISTENs and wakes every waiting worker.
//! A lost connection is opened again; notifications missed meanwhile are
//! caught by the workers' timeout. The same channel carries cancellations
//! (payload `cancel:<interaction id>`), passed on to the runtimes of this
//! process.

use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

/// The payload prefix of a cancellation.
pub(crate) const CANCEL: &str = "cancel:";

/// Starts the listener; it ends when the store (its `Notify`) is dropped.
pub(crate) fn spawn(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    channel: std::sync::Arc<str>,
    work: Weak<Notify>,
    cancels: tokio::sync::broadcast::Sender<thinklio_core::InteractionId>,
) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        while work.strong_count() > 0 {
            match config.connect(tls.clone()).await {
                Ok((client, mut connection)) => {
                    backoff = Duration::from_millis(100);
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    let quoted = format!("\"{}\"", channel.replace('"', "\"\""));
                    let statement = format!("LISTEN {quoted}");
                    let listen = client.batch_execute(&statement);
                    tokio::pin!(listen);
                    let mut listening = false;
                    loop {
                        tokio::select! {
                            done = &mut listen, if !listening => match done {
                                Ok(()) => listening = true,
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot LISTEN for work");
                                    break;
                                }
                            },
                            message = messages.next() => match message {
                                Some(Ok(AsyncMessage::Notification(n))) => {
                                    if let Some(id) = n.payload().strip_prefix(CANCEL) {
                                        // None listening is no error.
                                        if let Ok(id) = id.parse() {
                                            let _ = cancels.send(id);
                                        }
                                        continue;
                                    }
                                    match work.upgrade() {
                                        Some(work) => work.notify_waiters(),
                                        None => return,
                                    }
                                }
                                Some(Ok(_)) => {}
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "the work listener's connection failed");
                                    break;
                                }
                                None => break,
                            },
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                                if work.strong_count() == 0 {
                                    return;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot connect the work listener"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
}
