//! The web chat in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `scripts/test.sh`) opens the page the `http-server` example
//! prints on its first start, sends a message, and sees the reply stream in
//! and the steps listed with their cost; then a call that waits for a
//! decision is shown with Approve and Reject, and a click approves it. A
//! screenshot is saved as
//! `target/screenshots/web-chat.png`.
//!
//! The Agent Studio in the same browser: two agents made from a template,
//! one attached to the other as a delegate, the graph drawn, a message
//! answered through the delegation and the delegation seen in its steps,
//! each agent's usage this month in the list; a screenshot saved as
//! `target/screenshots/studio.png`.
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

/// Launches headless Chromium with its profile in `dir`; its events are
/// handled until the returned task is aborted.
async fn launch(dir: &std::path::Path) -> (Browser, tokio::task::JoinHandle<()>) {
    let config = BrowserConfig::builder()
        .chrome_executable(chromium())
        .no_sandbox()
        .user_data_dir(dir.join("chromium"))
        .window_size(1280, 900)
        .viewport(chromiumoxide::handler::viewport::Viewport {
            width: 1280,
            height: 900,
            ..Default::default()
        })
        .launch_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (browser, mut handler) = Browser::launch(config).await.unwrap();
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    (browser, events)
}

/// Saves a full-page screenshot as `target/screenshots/NAME`.
async fn screenshot(page: &chromiumoxide::Page, name: &str) {
    let png = page
        .screenshot(ScreenshotParams::builder().full_page(true).build())
        .await
        .unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join(name), &png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_chat_streams_a_reply_and_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs {
        db: dir.path().join("web.db"),
        addr: "127.0.0.1:0".parse().unwrap(),
        requests_per_minute: 600,
        metrics_addr: None,
        retain_days: None,
        command: None,
    };
    let server = start(&args, None).await.unwrap();
    let url = server
        .first_keys
        .clone()
        .expect("a first start prints the web chat with a key")
        .web_chat;

    let (mut browser, events) = launch(dir.path()).await;

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

    screenshot(&page, "web-chat.png").await;

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
    server.stop();
}

/// What the Studio showed after the agents were made and linked.
#[derive(Debug, Deserialize)]
struct Studio {
    /// The agents listed: (id, state, origin line).
    agents: Vec<(String, String, String)>,
    /// The graph's nodes: (agent, depth).
    nodes: Vec<(String, String)>,
    /// The graph's edges: (from, capability, to, on a cycle).
    edges: Vec<(String, String, String, bool)>,
    /// The delegations listed in the editor.
    delegates: Vec<String>,
}

/// What the Studio showed of a message to the agent.
#[derive(Debug, Deserialize)]
struct Tried {
    reply: String,
    /// The steps: (kind, capability).
    steps: Vec<(String, String)>,
    /// The usage column of the list: (agent, usage).
    usage: Vec<(String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_studio_makes_agents_from_a_template_links_them_and_draws_their_graph() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs {
        db: dir.path().join("studio.db"),
        addr: "127.0.0.1:0".parse().unwrap(),
        requests_per_minute: 600,
        metrics_addr: None,
        retain_days: None,
        command: None,
    };
    let server = start(&args, None).await.unwrap();
    let first = server.first_keys.clone().expect("a first start makes keys");
    // The template the Studio makes agents from.
    let made = reqwest::Client::new()
        .post(format!("http://{}/v1/templates", server.addr))
        .bearer_auth(&first.admin)
        .json(&serde_json::json!({
            "id": "desk",
            "description": "Answers with a calculator.",
            "definition": { "model": "offline", "system_prompt": "You help.",
                            "capabilities": ["calculator"], "approval_mode": "autopilot" }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201, "{}", made.text().await.unwrap());

    let (mut browser, events) = launch(dir.path()).await;
    let page = browser.new_page(first.studio.as_str()).await.unwrap();
    page.wait_for_navigation().await.unwrap();
    let shown: Studio = page
        .evaluate(
            r##"(async () => {
                const $ = (id) => document.getElementById(id);
                const until = async (test) => {
                    for (let i = 0; i < 600; i++) { if (test()) return; await new Promise((r) => setTimeout(r, 50)); }
                    throw new Error("the Studio never showed it: " + document.body.innerText);
                };
                await until(() => $("template").options.length === 1);
                for (const id of ["researcher", "helper"]) {
                    $("new-id").value = id;
                    $("create").click();
                    await until(() => document.querySelector('#agents tr[data-agent="' + id + '"]')
                        && $("editing").textContent.startsWith(id + " "));
                }
                // helper is in the editor: attach researcher as its delegate.
                $("delegate-agent").value = "researcher";
                $("delegate-name").value = "ask_researcher";
                $("attach").click();
                await until(() => document.querySelectorAll("#graph path.edge").length === 1);
                return {
                    agents: [...document.querySelectorAll("#agents tr")].map((tr) =>
                        [tr.dataset.agent, tr.querySelector(".state").textContent, tr.querySelector(".origin").textContent]),
                    nodes: [...document.querySelectorAll("#graph g.node")].map((g) => [g.dataset.agent, g.dataset.depth]),
                    edges: [...document.querySelectorAll("#graph path.edge")].map((p) =>
                        [p.dataset.from, p.dataset.capability, p.dataset.to, p.classList.contains("cycle")]),
                    delegates: [...document.querySelectorAll("#delegates li span")].map((s) => s.textContent),
                };
            })()"##,
        )
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(
        shown.agents,
        [
            (
                "helper".to_owned(),
                "active".to_owned(),
                "v2 · offline · from template desk (edited)".to_owned()
            ),
            (
                "researcher".to_owned(),
                "active".to_owned(),
                "v1 · offline · template desk v1".to_owned()
            ),
        ],
        "{shown:?}"
    );
    assert_eq!(
        shown.nodes,
        [
            ("helper".to_owned(), "0".to_owned()),
            ("researcher".to_owned(), "1".to_owned())
        ]
    );
    assert_eq!(
        shown.edges,
        [(
            "helper".to_owned(),
            "ask_researcher".to_owned(),
            "researcher".to_owned(),
            false
        )]
    );
    assert_eq!(shown.delegates, ["ask_researcher → researcher"]);

    // A message through the delegation: the reply comes from the delegate,
    // the delegation is an act in the steps, and both agents' usage shows.
    let tried: Tried = page
        .evaluate(
            r##"(async () => {
                const $ = (id) => document.getElementById(id);
                $("try-message").value = "ask researcher what is 2+2";
                $("try-send").click();
                for (let i = 0; i < 600 && !["done", "error"].includes($("try-reply").dataset.state); i++) {
                    await new Promise((r) => setTimeout(r, 50));
                }
                for (let i = 0; i < 600 && document.querySelector('#agents tr[data-agent="researcher"] .usage').textContent === "–"; i++) {
                    await new Promise((r) => setTimeout(r, 50));
                }
                return {
                    reply: $("try-reply").textContent,
                    steps: [...document.querySelectorAll("#try-steps li")].map((li) => [li.dataset.kind, li.dataset.capability]),
                    usage: [...document.querySelectorAll("#agents tr")].map((tr) => [tr.dataset.agent, tr.querySelector(".usage").textContent]),
                };
            })()"##,
        )
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(tried.reply, "ask_researcher says: 2+2 = 4", "{tried:?}");
    assert!(
        tried
            .steps
            .contains(&("act".to_owned(), "ask_researcher".to_owned())),
        "{tried:?}"
    );
    for (agent, usage) in &tried.usage {
        assert!(
            usage.starts_with("2 calls · $"),
            "{agent} made two model calls: {tried:?}"
        );
    }
    screenshot(&page, "studio.png").await;

    // Closing a circle is refused, named, and changes nothing.
    let refused: (String, String) = page
        .evaluate(
            r##"(async () => {
                const $ = (id) => document.getElementById(id);
                document.querySelector('#agents tr[data-agent="researcher"]').click();
                for (let i = 0; i < 600 && !$("editing").textContent.startsWith("researcher "); i++) {
                    await new Promise((r) => setTimeout(r, 50));
                }
                $("delegate-agent").value = "helper";
                $("attach").click();
                for (let i = 0; i < 600 && $("status").className !== "error"; i++) {
                    await new Promise((r) => setTimeout(r, 50));
                }
                return [$("status").textContent, $("editing").textContent];
            })()"##,
        )
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert!(
        refused.0.starts_with("delegation.cycle:")
            && [
                "researcher → helper → researcher",
                "helper → researcher → helper"
            ]
            .iter()
            .any(|c| refused.0.ends_with(c)),
        "{refused:?}"
    );
    assert_eq!(refused.1, "researcher · version 1 · active");

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    events.abort();
    server.stop();
}
