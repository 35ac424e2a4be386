//! The web chat in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `scripts/test.sh`) opens the page the `http-server` example
//! prints on its first start, sends a message, and sees the reply stream in
//! and the steps listed with their cost; then a call that waits for a
//! decision is shown with Approve and Reject, and a click approves it. A
//! screenshot is saved as
//! `target/screenshots/web-chat.png`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt;
use serde::Deserialize;
use thinklio_examples::http::server::{ServerArgs, start};

fn chromium() -> PathBuf {
    let path = std::env::var_os("THINKLIO_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        });
    path.unwrap_or_else(|| {
        panic!("Chromium is missing: scripts/test.sh installs it (apt-get install chromium), or set THINKLIO_CHROMIUM")
    })
}

#[derive(Debug, Deserialize)]
struct Seen {
    /// Each text the answer bubble showed while it streamed.
    states: Vec<String>,
    /// Its final text (with the meta line).
    text: String,
    /// The step list: (kind, capability, state, cost).
    steps: Vec<(String, String, String, String)>,
}

#[derive(Debug, Deserialize)]
struct Approved {
    /// The proposal's box, as shown.
    proposal: String,
    /// The answer while the call waited.
    waiting: String,
    /// The answer once approved.
    reply: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_chat_streams_a_reply_and_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs {
        db: dir.path().join("web.db"),
        addr: "127.0.0.1:0".parse().unwrap(),
        requests_per_minute: 600,
        command: None,
    };
    let server = start(&args, None).await.unwrap();
    let url = server
        .first_keys
        .clone()
        .expect("a first start prints the web chat with a key")
        .web_chat;

    let profile = dir.path().join("chromium");
    let config = BrowserConfig::builder()
        .chrome_executable(chromium())
        .no_sandbox()
        .user_data_dir(&profile)
        .window_size(1200, 800)
        .launch_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (mut browser, mut handler) = Browser::launch(config).await.unwrap();
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });

    let page = browser.new_page(url.as_str()).await.unwrap();
    page.wait_for_navigation().await.unwrap();
    // The key moved from the address into the page.
    let key: String = page
        .evaluate("document.getElementById('key').value")
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert!(
        key.starts_with("tk_"),
        "the page did not take the key from its address"
    );

    // Type and send; record every text the answer shows until it is done.
    let seen: Seen = page
        .evaluate(
            r#"new Promise((resolve) => {
                const states = [];
                const log = document.getElementById('log');
                const watch = new MutationObserver(() => {
                    const answer = log.querySelector('.msg.assistant, .msg.error');
                    if (!answer) return;
                    if (answer.classList.contains('streaming')) {
                        const t = answer.textContent;
                        if (t && states[states.length - 1] !== t) states.push(t);
                    } else {
                        watch.disconnect();
                        const steps = [...document.querySelectorAll('#steps li')].map((li) => [
                            li.dataset.kind, li.querySelector('.what').textContent,
                            li.querySelector('.state').textContent, li.querySelector('.cost').textContent]);
                        resolve({ states, text: answer.textContent, steps });
                    }
                });
                watch.observe(log, { subtree: true, childList: true, characterData: true, attributes: true });
                document.getElementById('message').value = 'what is 17*23?';
                document.getElementById('send').click();
            })"#,
        )
        .await
        .unwrap()
        .into_value()
        .unwrap();

    assert!(seen.text.starts_with("17*23 = 391"), "{seen:?}");
    assert!(seen.text.contains("6 steps"), "{seen:?}");
    // Streamed: the answer grew through partial texts before it was whole.
    assert!(seen.states.len() >= 2, "not streamed: {:?}", seen.states);
    assert!(
        seen.states.iter().all(|s| "17*23 = 391".starts_with(s)),
        "{:?}",
        seen.states
    );
    assert_ne!(seen.states[0], "17*23 = 391");
    let kinds: Vec<&str> = seen.steps.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        kinds,
        ["context", "think", "act", "observe", "think", "respond"],
        "{seen:?}"
    );
    assert!(seen.steps.iter().all(|s| s.2 == "succeeded"), "{seen:?}");
    assert_eq!(seen.steps[2].1, "calculator");
    // The model's steps carry their cost (the offline model is priced).
    let think_cost = &seen.steps[1].3;
    assert!(
        think_cost.starts_with('$') && think_cost != "$0.000000",
        "{seen:?}"
    );

    // A call that changes something waits: the chat shows it with Approve
    // and Reject; a click approves it, and the reply arrives.
    let approved: Approved = page
        .evaluate(
            r#"new Promise((resolve) => {
                const log = document.getElementById('log');
                const seen = { proposal: '', waiting: '' };
                const watch = new MutationObserver(() => {
                    const box = log.querySelector('.approval:not(.decided)');
                    const answers = log.querySelectorAll('.msg.assistant');
                    const answer = answers[answers.length - 1];
                    if (box && !seen.proposal && answer.classList.contains('waiting')) {
                        seen.proposal = box.textContent;
                        seen.waiting = answer.textContent;
                        box.querySelector('button.approve').click();
                    }
                    if (seen.proposal && answer.classList.contains('done')) {
                        watch.disconnect();
                        resolve({ proposal: seen.proposal, waiting: seen.waiting, reply: answer.textContent });
                    }
                });
                watch.observe(log, { subtree: true, childList: true, characterData: true, attributes: true });
                document.getElementById('message').value = 'add milk to my list';
                document.getElementById('send').click();
            })"#,
        )
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert!(
        approved.proposal.contains("todo_add") && approved.proposal.contains(r#"{"text":"milk"}"#),
        "{approved:?}"
    );
    assert!(
        approved.proposal.contains("Approve") && approved.proposal.contains("Reject"),
        "{approved:?}"
    );
    assert_eq!(
        approved.waiting, "Waiting for your decision.",
        "{approved:?}"
    );
    assert!(
        approved.reply.starts_with("Added to your todo list:") && approved.reply.contains("milk"),
        "{approved:?}"
    );

    let png = page
        .screenshot(ScreenshotParams::builder().full_page(true).build())
        .await
        .unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("web-chat.png"), &png).unwrap();

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
    server.stop();
}
