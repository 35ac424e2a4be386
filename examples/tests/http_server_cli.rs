//! `cargo run --example http-server -- --db PATH --addr 127.0.0.1:PORT`, as
//! the README says: the program starts on the offline model, prints the web
//! chat's address with a first key, serves the page, the OpenAPI document
//! and the API; started again on the same file, it keeps its keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod example_bin;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

fn binary() -> PathBuf {
    example_bin::example_binary("http-server")
}

struct Server {
    child: Child,
    base: String,
    web_chat: Option<String>,
    admin: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the program and reads its start-up lines.
fn start(db: &std::path::Path) -> Server {
    let child = Command::new(binary())
        .args(["--db", db.to_str().unwrap(), "--addr", "127.0.0.1:0"])
        .env_remove("THINKLIO_MODEL")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Killed and waited for on drop, whatever happens below.
    let mut server = Server {
        child,
        base: String::new(),
        web_chat: None,
        admin: None,
    };
    let mut lines = BufReader::new(server.child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the server exited").unwrap();
        if let Some(rest) = line.strip_prefix("Thinklio listens on ") {
            server.base = rest.split_whitespace().next().unwrap().to_owned();
        }
        if let Some(rest) = line.strip_prefix("admin key: ") {
            server.admin = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("web chat: ") {
            let url = rest.split_whitespace().next().unwrap().to_owned();
            server.web_chat = url.contains("#key=").then_some(url);
            assert!(!server.base.is_empty(), "no address line");
            // Keep draining its output so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return server;
        }
    }
}

/// One request; the JSON it answers.
async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut request = http.request(method.parse().unwrap(), url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_serves_the_page_the_document_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let http = reqwest::Client::new();
    let (key, admin) = {
        let server = start(&db);
        let url = server
            .web_chat
            .clone()
            .expect("the first start prints a key");
        let key = url.split("#key=").nth(1).unwrap().to_owned();
        assert!(
            url.starts_with(&format!("{}/#key=tk_", server.base)),
            "{url}"
        );

        let page = http.get(format!("{}/", server.base)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            page.text()
                .await
                .unwrap()
                .contains("<title>Thinklio web chat</title>")
        );

        let doc = call(
            &http,
            "GET",
            &format!("{}/openapi.json", server.base),
            None,
            None,
        )
        .await;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert!(doc["paths"]["/v1/sessions/{id}/messages"]["post"].is_object());

        let refused = http
            .get(format!("{}/v1/sessions?user=ada", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "auth.missing_key");

        let sessions = format!("{}/v1/sessions", server.base);
        let session = call(
            &http,
            "POST",
            &sessions,
            Some(&key),
            Some(json!({ "user": "ada" })),
        )
        .await;
        let messages = format!("{sessions}/{}/messages", session["id"].as_str().unwrap());
        let question = json!({ "text": "what is 17*23?" });
        let reply = call(&http, "POST", &messages, Some(&key), Some(question)).await;
        assert_eq!(reply["text"], "17*23 = 391");
        assert!(
            reply["cost_usd"].as_f64().unwrap() > 0.0,
            "the offline model is priced: {reply}"
        );
        let admin = server
            .admin
            .clone()
            .expect("the first start prints an admin key");
        (key, admin)
    };
    // Started again on the same file: no new key is printed, the old ones work.
    let server = start(&db);
    assert_eq!(
        (server.web_chat.as_deref(), server.admin.as_deref()),
        (None, None)
    );
    let usage = call(
        &http,
        "GET",
        &format!("{}/v1/usage?user=ada", server.base),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(usage["calls"], 2, "{usage}");
    let refused = call(
        &http,
        "GET",
        &format!("{}/v1/usage?user=ada", server.base),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(
        refused["error"]["code"], "auth.scope",
        "the web chat's key is a chat key"
    );

    // SIGTERM, as a service manager stops it: it shuts down and exits well.
    let mut server = server;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = server.child.wait().unwrap();
    assert!(exited.success(), "stopped by SIGTERM: {exited}");
}
