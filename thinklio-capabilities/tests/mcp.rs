//! MCP tools through the real harness, against the reference server
//! `@modelcontextprotocol/server-everything` (installed, pinned, by
//! `scripts/test.sh` with `npm ci`), spawned over stdio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::path::PathBuf;
use std::time::Duration;

use thinklio_capabilities::{McpAttach, McpError, McpHttp, McpServer};
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

fn everything() -> PathBuf {
    let bin: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/mcp-server/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
    ]
    .iter()
    .collect();
    assert!(
        bin.exists(),
        "the reference MCP server is not installed at {}: run scripts/test.sh, which installs it with \
         `npm ci --prefix thinklio-capabilities/tests/mcp-server`",
        bin.display()
    );
    bin
}

fn server_command() -> String {
    format!("node {}", everything().display())
}

async fn runtime(dir: &tempfile::TempDir, model: ScriptedModel) -> (Runtime, McpServer) {
    let runtime = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("m.db")).await.unwrap())
        .model(model)
        .agent(AgentDefinition::new("a", "m").capabilities([
            "echo",
            "get-sum",
            "trigger-long-running-operation",
        ]))
        .build()
        .unwrap();
    let server = McpServer::spawn(&server_command()).await.unwrap();
    let names = server.attach(runtime.capabilities()).await.unwrap();
    assert!(
        names.iter().any(|n| n == "echo") && names.iter().any(|n| n == "get-sum"),
        "{names:?}"
    );
    (runtime, server)
}

fn results(steps: &[Step]) -> Vec<Result<serde_json::Value, String>> {
    steps
        .iter()
        .filter(|s| s.kind == StepKind::Act)
        .map(|s| match &s.error {
            None => Ok(s.output.as_ref().unwrap()["result"].clone()),
            Some(e) => Err(format!("{}: {}", e.code, e.message)),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_of_the_reference_server_are_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("c1", "echo", r#"{"message": "hi"}"#),
        ScriptedReply::tool_call("c2", "get-sum", r#"{"a": 2, "b": 3}"#),
        ScriptedReply::tool_call("c3", "echo", r#"{"message": 7}"#),
        ScriptedReply::text("done"),
    ]);
    let (rt, _server) = runtime(&dir, model).await;
    let manifest = rt.capabilities().get("echo").unwrap().manifest().clone();
    assert_eq!(manifest.kind, CapabilityKind::Mcp);
    assert_eq!(
        manifest.side_effect,
        SideEffect::External,
        "a server's annotations are not believed unless the operator says so"
    );
    assert_eq!(
        manifest.parameters["required"],
        serde_json::json!(["message"])
    );

    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let reply = rt.send(session.id, "use the tools").await.unwrap();
    assert_eq!(reply.text, "done");
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    let got = results(&steps);
    assert_eq!(got[0], Ok(serde_json::json!("Echo: hi")));
    let sum = got[1].clone().unwrap().to_string();
    assert!(sum.contains('5'), "{sum}");
    // Arguments that break the server's schema never reach it.
    assert!(
        got[2]
            .as_ref()
            .unwrap_err()
            .starts_with("capability.invalid_arguments"),
        "{:?}",
        got[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_call_is_reported_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new([
        ScriptedReply::tool_call(
            "c1",
            "trigger-long-running-operation",
            r#"{"duration": 30, "steps": 3}"#,
        ),
        ScriptedReply::tool_call("c2", "echo", r#"{"message": "back"}"#),
        ScriptedReply::text("recovered"),
    ]);
    let (rt, server) = runtime(&dir, model).await;
    let pid = server.pid().await.expect("the server runs");
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let send = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.send(session.id, "go").await })
    };
    // Wait until the long call is under way, then kill the server.
    let running = async {
        loop {
            let me = Principal::local();
            let interactions = rt.sessions().interactions(me, session.id).await.unwrap();
            if let Some(i) = interactions.first() {
                let steps = rt.sessions().steps(me, i.id).await.unwrap();
                if steps
                    .iter()
                    .any(|s| s.kind == StepKind::Act && s.state == StepState::Running)
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the call starts");
    let killed = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let reply = tokio::time::timeout(Duration::from_secs(20), send)
        .await
        .expect("the interaction does not hang")
        .unwrap()
        .unwrap();
    assert_eq!(reply.text, "recovered");
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    let got = results(&steps);
    let error = got[0].clone().unwrap_err();
    assert!(error.contains("failed during the call"), "{error}");
    assert_eq!(
        got[1],
        Ok(serde_json::json!("Echo: back")),
        "the next call restarted the server"
    );
    assert_ne!(server.pid().await, Some(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_tools_follow_the_servers_tool_list() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/mcp-server/changing-tools.mjs"
    );
    everything(); // the same npm install provides the SDK the script uses
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("c1", "add-tool", r#"{"name": "greet"}"#),
        ScriptedReply::text("added"),
        ScriptedReply::tool_call("c2", "greet", "{}"),
        ScriptedReply::text("greeted"),
    ]);
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("c.db")).await.unwrap())
        .model(model)
        .agent(AgentDefinition::new("a", "m").capabilities(["add-tool", "greet"]))
        .build()
        .unwrap();
    let server = McpServer::spawn(&format!("node {script}")).await.unwrap();
    assert_eq!(
        server.attach(rt.capabilities()).await.unwrap(),
        vec!["add-tool"]
    );
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    rt.send(session.id, "add a tool").await.unwrap();
    let appeared = async {
        while rt.capabilities().get("greet").is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), appeared)
        .await
        .expect("the new tool is picked up");
    let reply = rt.send(session.id, "use it").await.unwrap();
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    assert_eq!(results(&steps), vec![Ok(serde_json::json!("I am greet"))]);
}

/// The reference server over streamable HTTP on a free port, once it listens.
async fn http_everything() -> (tokio::process::Child, u16) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let node = tokio::process::Command::new("node")
        .arg(everything())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let listening = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), listening)
        .await
        .expect("the HTTP server starts");
    (node, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_streamable_http_serves_its_tools() {
    let (mut node, port) = http_everything().await;
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("c1", "echo", r#"{"message": "over http"}"#),
        ScriptedReply::text("ok"),
        ScriptedReply::tool_call("c2", "echo", r#"{"message": "gone"}"#),
        ScriptedReply::text("it is gone"),
    ]);
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("h.db")).await.unwrap())
        .model(model)
        .agent(AgentDefinition::new("a", "m").capabilities(["echo"]))
        .build()
        .unwrap();
    let server = McpServer::connect(&format!("http://127.0.0.1:{port}/mcp"))
        .await
        .unwrap();
    let names = server.attach(rt.capabilities()).await.unwrap();
    assert!(names.iter().any(|n| n == "echo"), "{names:?}");
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let reply = rt.send(session.id, "echo").await.unwrap();
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    assert_eq!(
        results(&steps),
        vec![Ok(serde_json::json!("Echo: over http"))]
    );

    // The server goes away: the call fails with a clear error, in time.
    node.kill().await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(60), rt.send(session.id, "again"))
        .await
        .expect("the interaction does not hang")
        .unwrap();
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    let error = results(&steps)[0].clone().unwrap_err();
    assert!(error.starts_with("capability.failed"), "{error}");
}

fn host_echo() -> FunctionCapability {
    FunctionCapability::builder("echo", "The host's own echo.")
        .side_effect(SideEffect::ReadOnly)
        .handler(
            |args: serde_json::Map<String, serde_json::Value>| async move {
                Ok::<_, String>(serde_json::Value::Object(args))
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_tool_never_replaces_another_capability() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("n.db")).await.unwrap())
        .model(ScriptedModel::new([]))
        .capability(host_echo())
        .agent(AgentDefinition::new("a", "m").capabilities(["echo"]))
        .build()
        .unwrap();
    let server = McpServer::spawn(&server_command()).await.unwrap();
    let err = server.attach(rt.capabilities()).await.unwrap_err();
    match &err {
        McpError::NameTaken { names, .. } => assert_eq!(names, &["echo"]),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("prefix"), "{err}");
    assert_eq!(
        rt.capabilities().get("echo").unwrap().manifest().kind,
        CapabilityKind::Function,
        "the host's echo stays"
    );
    assert!(
        rt.capabilities().get("get-sum").is_none(),
        "a refused server registers nothing"
    );
    // The built-in job controls cannot be replaced either.
    for builtin in ["cancel_job", "job_status"] {
        let taken = rt.capabilities().register(
            FunctionCapability::builder(builtin, "Not the real one.").handler(
                |_: serde_json::Map<String, serde_json::Value>| async { Ok::<_, String>(0) },
            ),
        );
        assert_eq!(taken.unwrap_err().code(), "capability.name_taken");
    }
    // Named by server, both live side by side.
    let names = server
        .attach_with(rt.capabilities(), McpAttach::new().prefix("everything"))
        .await
        .unwrap();
    assert!(names.contains(&"everything__echo".to_owned()), "{names:?}");
    assert_eq!(
        rt.capabilities().get("echo").unwrap().manifest().kind,
        CapabilityKind::Function
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_announced_later_never_shadows_a_capability() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/mcp-server/changing-tools.mjs"
    );
    everything();
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("c1", "add-tool", r#"{"name": "echo"}"#),
        ScriptedReply::tool_call("c2", "add-tool", r#"{"name": "greet"}"#),
        ScriptedReply::text("added"),
    ]);
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("s.db")).await.unwrap())
        .model(model)
        .capability(host_echo())
        .agent(AgentDefinition::new("a", "m").capabilities(["add-tool"]))
        .build()
        .unwrap();
    let server = McpServer::spawn(&format!("node {script}")).await.unwrap();
    server.attach(rt.capabilities()).await.unwrap();
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    rt.send(session.id, "add two tools").await.unwrap();
    // `greet` is announced after `echo`: once it is there, the list that
    // named `echo` was read too.
    let appeared = async {
        while rt.capabilities().get("greet").is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), appeared)
        .await
        .expect("the new tool is picked up");
    assert_eq!(
        rt.capabilities().get("echo").unwrap().manifest().kind,
        CapabilityKind::Function,
        "the server's `echo` did not replace the host's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_decides_what_an_mcp_tool_may_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let registry_of = |name: &str| {
        let name = name.to_owned();
        let dir = dir.path().join(name);
        async move {
            Runtime::builder()
                .store(SqliteStore::open(dir).await.unwrap())
                .model(ScriptedModel::new([]))
                .build()
                .unwrap()
        }
    };
    let cases = [
        (McpAttach::new(), SideEffect::External),
        (McpAttach::new().trust_annotations(), SideEffect::ReadOnly),
        (
            McpAttach::new()
                .trust_annotations()
                .side_effect("echo", SideEffect::Idempotent),
            SideEffect::Idempotent,
        ),
    ];
    for (i, (options, expected)) in cases.into_iter().enumerate() {
        let rt = registry_of(&format!("r{i}.db")).await;
        let server = McpServer::spawn(&server_command()).await.unwrap();
        server
            .attach_with(rt.capabilities(), options)
            .await
            .unwrap();
        let echo = rt.capabilities().get("echo").unwrap();
        assert_eq!(echo.manifest().side_effect, expected, "case {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_one_server_do_not_wait_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::responder(|r| match r.messages.last() {
        Some(m) if m.role == Role::User && m.content == "long" => ScriptedReply::tool_call(
            "c1",
            "trigger-long-running-operation",
            r#"{"duration": 60, "steps": 2}"#,
        ),
        Some(m) if m.role == Role::User => {
            ScriptedReply::tool_call("c2", "echo", r#"{"message": "quick"}"#)
        }
        _ => ScriptedReply::text("done"),
    });
    let (rt, _server) = runtime(&dir, model).await;
    let long = rt
        .open_session(Principal::local(), "a", "t", Some("long"))
        .await
        .unwrap();
    let quick = rt
        .open_session(Principal::local(), "a", "t", Some("quick"))
        .await
        .unwrap();
    let slow = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.send(long.id, "long").await })
    };
    // Once the long call is in flight...
    let running = async {
        loop {
            let me = Principal::local();
            if let Some(i) = rt
                .sessions()
                .interactions(me, long.id)
                .await
                .unwrap()
                .first()
            {
                let steps = rt.sessions().steps(me, i.id).await.unwrap();
                if steps
                    .iter()
                    .any(|s| s.kind == StepKind::Act && s.state == StepState::Running)
                {
                    return i.id;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let long_interaction = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the long call starts");
    // ...another call to the same server is answered while it runs.
    let reply = rt.send(quick.id, "echo").await.unwrap();
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    assert_eq!(results(&steps), vec![Ok(serde_json::json!("Echo: quick"))]);
    let long_steps = rt
        .sessions()
        .steps(Principal::local(), long_interaction)
        .await
        .unwrap();
    assert!(
        long_steps
            .iter()
            .any(|s| s.kind == StepKind::Act && s.state == StepState::Running),
        "the quick call did not wait for the long one"
    );
    slow.abort();
}

/// An authorising gateway in front of the reference server over HTTP: it
/// forwards only requests that carry `Authorization: Bearer {token}`.
async fn gateway(upstream: String, token: &'static str) -> String {
    use axum::body::Body;
    use axum::http::{Request, Response, StatusCode};
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: Request<Body>| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            let authorised = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {token}"));
            if !authorised {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .body(Body::from("no"))
                    .unwrap();
            }
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut forwarded = http.request(parts.method, format!("{upstream}{}", parts.uri));
            for (name, value) in &parts.headers {
                if name != "host" {
                    forwarded = forwarded.header(name, value);
                }
            }
            let answer = forwarded.body(body).send().await.unwrap();
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            response
                .body(Body::from_stream(answer.bytes_stream()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_gets_its_headers_and_answers_within_a_limit() {
    let (_node, port) = http_everything().await;
    let base = gateway(format!("http://127.0.0.1:{port}"), "s3cret").await;
    let url = format!("{base}/mcp");
    assert!(
        McpServer::connect(&url).await.is_err(),
        "without its header the gateway refuses"
    );
    let http = McpHttp::new(&url)
        .bearer("s3cret")
        .unwrap()
        .max_response_bytes(64 * 1024);
    assert!(!format!("{http:?}").contains("s3cret"), "{http:?}");
    let server = McpServer::connect_with(http).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(100_000);
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("c1", "echo", r#"{"message": "short"}"#),
        ScriptedReply::tool_call("c2", "echo", format!(r#"{{"message": "{long}"}}"#)),
        ScriptedReply::text("ok"),
    ]);
    let rt = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("g.db")).await.unwrap())
        .model(model)
        .agent(AgentDefinition::new("a", "m").capabilities(["echo"]))
        .build()
        .unwrap();
    server.attach(rt.capabilities()).await.unwrap();
    let session = rt
        .open_session(Principal::local(), "a", "t", None)
        .await
        .unwrap();
    let reply = rt.send(session.id, "echo").await.unwrap();
    let steps = rt
        .sessions()
        .steps(Principal::local(), reply.interaction_id)
        .await
        .unwrap();
    let got = results(&steps);
    assert_eq!(got[0], Ok(serde_json::json!("Echo: short")));
    let err = got[1].clone().unwrap_err();
    assert!(
        err.starts_with("capability.failed"),
        "an answer over the limit is refused: {err}"
    );
}
