//! The HTTP host of the tests: a runtime on a SQLite file behind the API
//! over a real socket, two accounts with an admin key each, an outside
//! service that takes deferred work, and request helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use reqwest::StatusCode;
use serde_json::{Value, json};
use thinklio_capabilities::{WebhookCapability, WebhookSecret};
use thinklio_core::channel::ChannelRouter;
use thinklio_core::{
    AccountPolicy, AgentDefinition, ChatModel, DirectoryStore, EventKind, JobCallbacks, Runtime,
    StepMode,
};
use thinklio_examples::http::keys::{ApiKeys, KeyScope};
use thinklio_examples::http::server::word_count;
use thinklio_examples::http::{HttpChannel, HttpConfig, HttpHost, prepare};
use thinklio_examples::offline::{calculator, offline_model};
use thinklio_store_sqlite::SqliteStore;

/// Headers a webhook was called with, in order.
pub type Calls = Arc<Mutex<Vec<HeaderMap>>>;

/// A service that takes work and answers `202 Accepted`, keeping each call's headers.
pub async fn outside_service() -> (String, Calls) {
    let calls: Calls = Arc::default();
    let kept = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/work",
        axum::routing::post(move |headers: HeaderMap| {
            let kept = Arc::clone(&kept);
            async move {
                kept.lock().unwrap().push(headers);
                (axum::http::StatusCode::ACCEPTED, "{}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/work"), calls)
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Note {
    /// What to keep.
    text: String,
}

/// `remember(text)`: keeps a note (an outside effect: at most once).
fn remember(kept: &Arc<Mutex<Vec<String>>>) -> thinklio_core::FunctionCapability {
    let kept = Arc::clone(kept);
    thinklio_core::FunctionCapability::builder("remember", "Keeps a note for the user.").handler(
        move |note: Note| {
            let kept = Arc::clone(&kept);
            async move {
                kept.lock().unwrap().push(note.text.clone());
                Ok::<_, String>(json!({ "kept": note.text }))
            }
        },
    )
}

/// What the `judge` agent answers with.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[allow(dead_code)] // read as JSON by the tests
pub struct Sentiment {
    /// `positive`, `negative` or `neutral`.
    pub label: String,
}

pub struct Api {
    pub base: String,
    pub db: std::path::PathBuf,
    pub host: Arc<HttpHost>,
    pub key: String,
    pub other_key: String,
    pub calls: Calls,
    /// What the `remember` capability was asked to keep, in order.
    pub remembered: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    _worker: thinklio_core::JobWorker,
}

impl Api {
    pub async fn start(requests_per_minute: u32) -> Api {
        Self::start_with(HttpConfig::new("assistant").requests_per_minute(requests_per_minute))
            .await
    }

    pub async fn start_with(config: HttpConfig) -> Api {
        Self::start_with_model(config, Arc::new(offline_model())).await
    }

    pub async fn start_with_model(config: HttpConfig, model: Arc<dyn ChatModel>) -> Api {
        let config = config.dispatchable(["word_count", "outside_work"]);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("http.db");
        let store = SqliteStore::open(&db).await.unwrap();
        let keys = ApiKeys::open(&db).unwrap();
        let (service, calls) = outside_service().await;
        let remembered: Arc<Mutex<Vec<String>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = ChannelRouter::new();
        let channel = HttpChannel::new();
        let outside = WebhookCapability::new(
            "outside_work",
            "Hands work to an outside service, which reports back later.",
            service,
            WebhookSecret::new("webhook-secret"),
        )
        .default_mode(StepMode::Deferred);
        let runtime = prepare(
            Runtime::builder().store(store.clone()).model_arc(model),
            &router,
            &channel,
        )
        .capability(calculator())
        .capability(word_count())
        .capability(outside)
        .capability(remember(&remembered))
        .agent(AgentDefinition::new("assistant", "offline").capabilities([
            "calculator",
            "word_count",
            "outside_work",
        ]))
        // Sessions with `judge` answer with JSON of a declared schema.
        .agent(AgentDefinition::new("judge", "offline").answers_as::<Sentiment>())
        // Sessions with `careful` ask before each call that is not read-only.
        .agent(
            AgentDefinition::new("careful", "offline")
                .capabilities(["remember"])
                .approval_mode(thinklio_core::approval::ApprovalMode::Draft),
        )
        .job_callbacks(JobCallbacks::new(
            format!("http://{addr}/v1/jobs/{{job}}/report"),
            b"callback-secret".to_vec(),
        ))
        .build()
        .unwrap();
        let worker = runtime.spawn_job_worker(Duration::from_millis(50));
        let mut secrets = Vec::new();
        for name in ["acme", "globex"] {
            let account = thinklio_core::AccountId::new();
            store
                .put_account(account, name, AccountPolicy::default())
                .await
                .unwrap();
            secrets.push(keys.create(account, KeyScope::Admin, name).await.unwrap().1);
        }
        let host = HttpHost::new(runtime, keys, channel, config);
        let serving = Arc::clone(&host);
        tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
        Api {
            base: format!("http://{addr}"),
            db: db.clone(),
            host,
            other_key: secrets.pop().unwrap(),
            key: secrets.pop().unwrap(),
            calls,
            remembered,
            http: reqwest::Client::new(),
            _dir: dir,
            _worker: worker,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(&self.key), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(&self.key), Some(body)).await
    }

    pub async fn session(&self, user: &str) -> String {
        let (status, body) = self.post("/v1/sessions", json!({ "user": user })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the job is in one of `states`.
    pub async fn job_in(&self, id: &str, states: &[&str]) -> Value {
        let mut events = self.host.runtime().subscribe();
        loop {
            let (status, body) = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if states.contains(&body["job"]["state"].as_str().unwrap()) {
                return body;
            }
            // The next change of any job.
            loop {
                let e = tokio::time::timeout(Duration::from_secs(30), events.recv())
                    .await
                    .expect("no job change within 30 s")
                    .unwrap();
                if e.kind == EventKind::JobStateChanged {
                    break;
                }
            }
        }
    }
}

pub fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}
