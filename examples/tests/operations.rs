//! What an operator sees of the HTTP example: after a scripted conversation
//! over the API, a scrape of `/metrics` (on `--metrics-addr` only) shows the
//! steps, model calls, tokens, cost and capability calls it made and the
//! call waiting for a decision, and nothing of who said what; `/healthz`
//! and `/readyz` answer on both addresses. The Telegram bot, run as a user
//! runs it with `--metrics-addr`, serves the same.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bot_api;
mod example_bin;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use thinklio_examples::http::server::{ServerArgs, start};

/// The value of the sample `name` whose labels include `labels`, summed
/// over the samples that match (a scrape in the Prometheus text format).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name {
            continue;
        }
        let have: BTreeMap<&str, &str> = rest
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k, v.trim_matches('"'))
            })
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_conversation_shows_its_steps_tokens_and_cost() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs {
        db: dir.path().join("ops.db"),
        addr: "127.0.0.1:0".parse().unwrap(),
        requests_per_minute: 600,
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
        retain_days: Some(30),
        command: None,
    };
    let server = start(&args, None).await.unwrap();
    let admin = server.first_keys.clone().unwrap().admin;
    let (api, ops) = (
        format!("http://{}", server.addr),
        format!("http://{}", server.metrics_addr.unwrap()),
    );
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        http.post(format!("{api}{path}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };

    // A conversation: arithmetic (the calculator), then a todo that waits
    // for a decision.
    let session: Value = post("/v1/sessions".into(), json!({ "user": "ada-lovelace" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages = format!("/v1/sessions/{}/messages", session["id"].as_str().unwrap());
    let reply: Value = post(messages.clone(), json!({ "text": "what is 17*23?" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["text"], "17*23 = 391", "{reply}");
    let waiting: Value = post(messages, json!({ "text": "add secret plans to my list" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(waiting["waiting"].as_array().unwrap().len(), 1, "{waiting}");

    let scrape = http.get(format!("{ops}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(
        scrape.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = scrape.text().await.unwrap();
    let think = [("kind", "think"), ("state", "succeeded")];
    // Two model calls answered the arithmetic, one proposed the todo.
    assert_eq!(
        sample(&text, "thinklio_steps_total", &think),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "thinklio_steps_total",
            &[("kind", "act"), ("state", "waiting")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "thinklio_step_duration_seconds_count",
            &[("kind", "think")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "thinklio_model_calls_total",
            &[("model", "offline"), ("state", "succeeded")]
        ),
        Some(3.0)
    );
    for direction in ["input", "output"] {
        let tokens = sample(
            &text,
            "thinklio_model_tokens_total",
            &[("model", "offline"), ("direction", direction)],
        )
        .unwrap();
        assert!(tokens > 0.0, "{direction} tokens: {text}");
    }
    // The offline model is priced: the cost counter matches the usage the
    // API reports for the account.
    let usage: Value = http
        .get(format!("{api}/v1/usage"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nanos = sample(
        &text,
        "thinklio_model_cost_nanodollars_total",
        &[("model", "offline")],
    )
    .unwrap();
    assert!(nanos > 0.0);
    assert!(
        (nanos / 1e9 - usage["cost_usd"].as_f64().unwrap()).abs() < 1e-9,
        "{nanos} nanodollars vs {usage}"
    );
    assert_eq!(
        sample(
            &text,
            "thinklio_capability_calls_total",
            &[("capability", "calculator"), ("state", "succeeded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "thinklio_approvals_requested_total", &[]),
        Some(1.0)
    );
    assert_eq!(sample(&text, "thinklio_approvals_waiting", &[]), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "thinklio_interactions_total",
            &[("outcome", "completed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "thinklio_interactions_in_flight", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "thinklio_replies_undelivered", &[]),
        Some(0.0)
    );
    assert!(text.contains("# HELP thinklio_steps_total"), "described");
    // Nobody's words or names.
    for private in ["ada-lovelace", "secret plans", "17*23"] {
        assert!(!text.contains(private), "{private} in the metrics");
    }

    // Metrics are not on the address tenants reach; health is on both.
    let on_api = http.get(format!("{api}/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), 404);
    for base in [&api, &ops] {
        let alive = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(alive.status(), 200);
        let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let ready: Value = ready.json().await.unwrap();
        assert_eq!(
            ready,
            json!({ "ready": true, "store": "ok", "workers": { "jobs": "running", "queue": "running", "retention": "running" } })
        );
    }
    server.stop();
}

/// The bot program killed and waited for however the test ends.
struct Program(std::process::Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telegram_bot_serves_its_metrics_on_the_address_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = bot_api::FakeBotApi::start().await;
    let mut bot = Program(
        Command::new(example_bin::example_binary("telegram-bot"))
            .args(["--db", dir.path().join("bot.db").to_str().unwrap()])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("TELEGRAM_BOT_TOKEN", bot_api::TOKEN)
            .env("TELEGRAM_API_URL", &url)
            .env_remove("THINKLIO_MODEL")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Its log is read to the end (shown with the test's output), so that
    // a full pipe never stalls it; the address comes from its first lines.
    let stderr = bot.0.stderr.take().unwrap();
    let (said, heard) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut said = Some(said);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("bot: {line}");
            if let Some(rest) = line.strip_prefix("metrics on ")
                && let Some(said) = said.take()
            {
                let _ = said.send(rest.split_whitespace().next().unwrap().to_owned());
            }
        }
    });
    let metrics = heard
        .await
        .expect("the bot never said where its metrics are");

    api.say(bot_api::ADA, "Ada", "what is 6*7?");
    let sent = api.wait_for(bot_api::ADA, 1).await;
    assert_eq!(sent, ["6*7 = 42"]);
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert_eq!(
        sample(
            &text,
            "thinklio_capability_calls_total",
            &[("capability", "calculator"), ("state", "succeeded")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "thinklio_model_calls_total", &[("model", "offline")]),
        Some(2.0)
    );
    let ready = reqwest::get(metrics.replace("/metrics", "/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
