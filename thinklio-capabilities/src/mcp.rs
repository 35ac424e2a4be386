//! Tools of MCP servers as capabilities, through the `rmcp` client.
//!
//! [`McpServer::spawn`] starts a server process and speaks MCP to it over
//! stdio; [`McpServer::connect`] reaches one over streamable HTTP;
//! [`McpServer::connect_with`] adds headers (an `Authorization`) and a
//! response size limit; [`McpServer::attach`] registers every tool it lists
//! as a capability of kind `mcp` (its input schema is the parameter schema,
//! its output schema the return schema) and keeps the registry in step when
//! the server announces that its tool list changed.
//!
//! A server does not decide what its tools may replace or how they are
//! recovered:
//! - A tool whose name another capability has (a built-in, a host's
//!   function, another server's tool) is refused with
//!   [`McpError::NameTaken`] at attach, and skipped with a warning when it
//!   appears later; [`McpAttach::prefix`] names a server's tools
//!   `PREFIX__tool` so two servers can offer the same tool.
//! - Every tool is `external` (never re-run after a crash) unless the
//!   operator says otherwise, per tool ([`McpAttach::side_effect`]) or by
//!   choosing to believe the server's annotations
//!   ([`McpAttach::trust_annotations`]): a `readOnlyHint` is the server's
//!   claim, not a fact.
//!
//! Calls to one server run concurrently: no lock is held while a call is
//! in flight.
//!
//! A server that exits is reported: the call that was running fails with a
//! clear error (never a hang: the harness's timeout bounds every call), and
//! the next call starts the server again. A call is never repeated on a
//! restarted server, since whether it took effect is unknown.
//!
//! Notifications a server sends before its `initialize` response (the
//! reference server sends one) are skipped by the `rmcp` handshake.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::CallToolRequestParams;
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{Value, json};
use thinklio_core::{
    Capability, CapabilityError, CapabilityKind, CapabilityManifest, CapabilityRegistry,
    InvocationContext, SideEffect,
};
use tokio::sync::Mutex;

/// Why an MCP server could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The command line is empty.
    #[error("the MCP server command is empty")]
    EmptyCommand,
    /// The process could not be started.
    #[error("cannot start the MCP server `{command}`: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The MCP handshake or a request failed.
    #[error("the MCP server `{command}` failed: {message}")]
    Protocol {
        /// The command.
        command: String,
        /// What went wrong.
        message: String,
    },
    /// Tools of the server have names other capabilities have; nothing of
    /// the server was registered.
    #[error(
        "the MCP server `{command}` offers tools named like capabilities already registered ({}): \
         attach it with a prefix (McpAttach::prefix)",
        names.join(", ")
    )]
    NameTaken {
        /// The command.
        command: String,
        /// The names taken.
        names: Vec<String>,
    },
    /// A header given for an HTTP server is not a valid header.
    #[error("invalid header for the MCP server: {0}")]
    BadHeader(String),
    /// A tool could not be registered.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
}

/// How to reach an MCP server over streamable HTTP.
#[derive(Clone)]
pub struct McpHttp {
    url: String,
    headers: HashMap<HeaderName, HeaderValue>,
    max_response_bytes: usize,
}

impl std::fmt::Debug for McpHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values (an authorization) never reach a log.
        f.debug_struct("McpHttp")
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl McpHttp {
    /// The server at `url`; answers up to 4 MiB.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: HashMap::new(),
            max_response_bytes: 4 * 1024 * 1024,
        }
    }

    /// Sends `name: value` with every request (marked sensitive, so it is
    /// never logged).
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, McpError> {
        let name = HeaderName::try_from(name).map_err(|e| McpError::BadHeader(e.to_string()))?;
        let mut value = HeaderValue::try_from(value)
            .map_err(|_| McpError::BadHeader(format!("the value of {name}")))?;
        value.set_sensitive(true);
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Sends `Authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Result<Self, McpError> {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Reads at most `bytes` of one answer (a JSON body or one event of a
    /// stream); a longer one fails the request.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }
}

/// How a server's tools are registered.
#[derive(Debug, Clone, Default)]
pub struct McpAttach {
    prefix: Option<String>,
    side_effects: HashMap<String, SideEffect>,
    trust_annotations: bool,
}

impl McpAttach {
    /// Tools named as the server names them, all `external`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers each tool as `PREFIX__tool`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The side-effect class of the tool the server calls `tool`.
    pub fn side_effect(mut self, tool: impl Into<String>, class: SideEffect) -> Self {
        self.side_effects.insert(tool.into(), class);
        self
    }

    /// Believes the server's `readOnlyHint` and `idempotentHint` for tools
    /// not set with [`McpAttach::side_effect`].
    pub fn trust_annotations(mut self) -> Self {
        self.trust_annotations = true;
        self
    }

    fn name_of(&self, tool: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}__{tool}"),
            None => tool.to_owned(),
        }
    }

    fn side_effect_of(&self, tool: &rmcp::model::Tool) -> SideEffect {
        if let Some(class) = self.side_effects.get(tool.name.as_ref()) {
            return *class;
        }
        if !self.trust_annotations {
            return SideEffect::External;
        }
        let hints = tool.annotations.as_ref();
        match (
            hints.and_then(|a| a.read_only_hint),
            hints.and_then(|a| a.idempotent_hint),
        ) {
            (Some(true), _) => SideEffect::ReadOnly,
            (_, Some(true)) => SideEffect::Idempotent,
            _ => SideEffect::External,
        }
    }
}

/// Answers the server's notifications: a changed tool list wakes the task
/// that re-reads it.
#[derive(Clone)]
struct Handler {
    changed: Arc<tokio::sync::Notify>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changed.notify_one();
    }
}

type Client = RunningService<RoleClient, Handler>;

/// How to reach a server.
enum Target {
    /// A process spoken to over its stdio.
    Stdio { program: String, args: Vec<String> },
    /// A server at a streamable-HTTP endpoint.
    Http(McpHttp),
}

/// The connection to a server and which one it is, so a failed call
/// forgets only the connection it used.
struct Connection {
    client: Arc<Client>,
    generation: u64,
}

struct Server {
    /// The command line or URL, for messages.
    command: String,
    /// This server's name as the owner of what it registers.
    owner: String,
    target: Target,
    connection: Mutex<Option<Connection>>,
    generations: std::sync::atomic::AtomicU64,
    changed: Arc<tokio::sync::Notify>,
    pid: std::sync::Mutex<Option<u32>>,
    /// How its tools are registered, and the names registered for it (to
    /// remove those that disappear).
    attached: std::sync::Mutex<(McpAttach, Vec<String>)>,
}

/// Distinguishes servers started with the same command.
static SERVERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An MCP server process whose tools are capabilities.
#[derive(Clone)]
pub struct McpServer {
    server: Arc<Server>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("command", &self.server.command)
            .finish_non_exhaustive()
    }
}

impl McpServer {
    /// Starts `command` (a program and its arguments, separated by spaces)
    /// and completes the MCP handshake over its stdio.
    pub async fn spawn(command: &str) -> Result<Self, McpError> {
        let mut words = command.split_whitespace().map(str::to_owned);
        let program = words.next().ok_or(McpError::EmptyCommand)?;
        Self::start(
            command,
            Target::Stdio {
                program,
                args: words.collect(),
            },
        )
        .await
    }

    /// Connects to a server at a streamable-HTTP endpoint (such as
    /// `http://localhost:3001/mcp`); `https` URLs are verified against the
    /// platform's certificates.
    pub async fn connect(url: &str) -> Result<Self, McpError> {
        Self::connect_with(McpHttp::new(url)).await
    }

    /// Connects to a server over streamable HTTP with headers and a
    /// response size limit.
    pub async fn connect_with(http: McpHttp) -> Result<Self, McpError> {
        // The MCP client's HTTP stack leaves the choice of TLS provider to
        // the application; the first connection picks ring, which the rest
        // of Thinklio's HTTP already uses. A provider set earlier by the
        // host is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = http.url.clone();
        Self::start(&url, Target::Http(http)).await
    }

    async fn start(command: &str, target: Target) -> Result<Self, McpError> {
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let server = Arc::new(Server {
            command: command.to_owned(),
            owner: format!("the MCP server `{command}` (#{n})"),
            target,
            connection: Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
            changed: Arc::new(tokio::sync::Notify::new()),
            pid: std::sync::Mutex::new(None),
            attached: std::sync::Mutex::new((McpAttach::default(), Vec::new())),
        });
        let connection = server.connect().await?;
        *server.connection.lock().await = Some(connection);
        Ok(Self { server })
    }

    /// The process id of the running server, if it runs as a process of ours.
    pub async fn pid(&self) -> Option<u32> {
        let guard = self.server.connection.lock().await;
        guard
            .as_ref()
            .and_then(|_| self.server.pid.lock().ok().and_then(|p| *p))
    }

    /// Registers every tool of the server in `registry` under its own
    /// name, as `external` (see [`McpServer::attach_with`]).
    pub async fn attach(&self, registry: &CapabilityRegistry) -> Result<Vec<String>, McpError> {
        self.attach_with(registry, McpAttach::new()).await
    }

    /// Registers every tool of the server in `registry` as `options` say,
    /// and keeps them in step with the server's tool list from then on.
    /// Returns the names. Refused, registering nothing, if a tool's name is
    /// taken.
    pub async fn attach_with(
        &self,
        registry: &CapabilityRegistry,
        options: McpAttach,
    ) -> Result<Vec<String>, McpError> {
        self.server
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0 = options;
        let names = self.server.sync(registry, true).await?;
        let weak = Arc::downgrade(&self.server);
        let registry = registry.clone();
        let changed = Arc::clone(&self.server.changed);
        tokio::spawn(async move {
            loop {
                changed.notified().await;
                let Some(server) = weak.upgrade() else { return };
                if let Err(e) = server.sync(&registry, false).await {
                    tracing::warn!(server = %server.command, error = %e, "could not re-read the MCP tool list");
                }
            }
        });
        Ok(names)
    }
}

impl Server {
    async fn connect(&self) -> Result<Connection, McpError> {
        let handler = Handler {
            changed: Arc::clone(&self.changed),
        };
        let served = match &self.target {
            Target::Stdio { program, args } => {
                let mut command = tokio::process::Command::new(program);
                command.args(args);
                let (transport, _stderr) = TokioChildProcess::builder(command)
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map_err(|source| McpError::Spawn {
                        command: self.command.clone(),
                        source,
                    })?;
                if let Ok(mut pid) = self.pid.lock() {
                    *pid = transport.id();
                }
                handler.serve(transport).await
            }
            Target::Http(http) => {
                let config = StreamableHttpClientTransportConfig::with_uri(http.url.as_str())
                    .custom_headers(http.headers.clone())
                    .max_json_response_size(http.max_response_bytes)
                    .max_sse_event_size(http.max_response_bytes);
                handler
                    .serve(StreamableHttpClientTransport::from_config(config))
                    .await
            }
        };
        let client = served.map_err(|e| self.protocol(e))?;
        Ok(Connection {
            client: Arc::new(client),
            generation: self
                .generations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    fn protocol(&self, e: impl std::fmt::Display) -> McpError {
        McpError::Protocol {
            command: self.command.clone(),
            message: e.to_string(),
        }
    }

    /// The running connection, started again first if the server exited.
    /// The lock is held only to look, never during a call.
    async fn connection(&self) -> Result<(Arc<Client>, u64), CapabilityError> {
        let mut guard = self.connection.lock().await;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            tracing::warn!(server = %self.command, "the MCP server is not running; starting it again");
            *guard = None;
            let connection = self.connect().await.map_err(|e| {
                CapabilityError::failed(format!(
                    "the MCP server is down and could not be restarted: {e}"
                ))
            })?;
            *guard = Some(connection);
        }
        guard
            .as_ref()
            .map(|c| (Arc::clone(&c.client), c.generation))
            .ok_or_else(|| CapabilityError::failed("the MCP server is not running"))
    }

    /// Reads the tool list and brings the registry in step with it. At
    /// attach (`strict`), a name taken by another capability refuses the
    /// whole server; later, such a tool is skipped with a warning.
    async fn sync(
        self: &Arc<Self>,
        registry: &CapabilityRegistry,
        strict: bool,
    ) -> Result<Vec<String>, McpError> {
        let (client, _) = self.connection().await.map_err(|e| self.protocol(e))?;
        let tools = client
            .list_all_tools()
            .await
            .map_err(|e| self.protocol(e))?;
        let options = self
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone();
        let mut names = Vec::with_capacity(tools.len());
        let mut taken = Vec::new();
        for tool in &tools {
            let capability = McpTool::new(Arc::downgrade(self), &self.command, tool, &options);
            let name = capability.manifest.name.clone();
            match registry.register_owned(capability, &self.owner) {
                Ok(()) => names.push(name),
                Err(CapabilityError::NameTaken { .. }) => taken.push(name),
                Err(e) => {
                    self.unregister(registry, &names);
                    return Err(e.into());
                }
            }
        }
        if !taken.is_empty() {
            if strict {
                self.unregister(registry, &names);
                return Err(McpError::NameTaken {
                    command: self.command.clone(),
                    names: taken,
                });
            }
            tracing::warn!(
                server = %self.command,
                tools = ?taken,
                "the MCP server offers tools named like other capabilities; they are not registered"
            );
        }
        let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = attached
            .1
            .iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        self.unregister(registry, &gone);
        attached.1 = names.clone();
        Ok(names)
    }

    fn unregister(&self, registry: &CapabilityRegistry, names: &[String]) {
        for name in names {
            registry.remove_owned(name, &self.owner);
        }
    }

    /// Calls a tool, starting the server again first if it has exited.
    async fn call(&self, tool: &str, arguments: Value) -> Result<Value, CapabilityError> {
        let (client, generation) = self.connection().await?;
        let mut params = CallToolRequestParams::new(Cow::Owned(tool.to_owned()));
        if let Value::Object(map) = arguments {
            params = params.with_arguments(map);
        }
        let result = match client.call_tool(params).await {
            Ok(result) => result,
            Err(e) => {
                // The connection is not trusted again: the next call starts
                // the server anew (unless another call did already). This
                // call is not repeated.
                let mut guard = self.connection.lock().await;
                if guard.as_ref().is_some_and(|c| c.generation == generation) {
                    *guard = None;
                }
                return Err(CapabilityError::failed(format!(
                    "the MCP server `{}` failed during the call (it may have exited): {e}",
                    self.command
                )));
            }
        };
        let value = serde_json::to_value(&result)
            .map_err(|e| CapabilityError::InvalidResult(e.to_string()))?;
        tool_result(&value)
    }
}

/// What a tool's result (`CallToolResult` as JSON) is to the model: its
/// structured content if it has some, its one text block as a string, its
/// content blocks otherwise; an error result is a failed call with its
/// text. Whatever a server sends, this answers; it never panics.
fn tool_result(value: &Value) -> Result<Value, CapabilityError> {
    let text: Vec<&str> = value["content"]
        .as_array()
        .map(|blocks| blocks.iter().filter_map(|b| b["text"].as_str()).collect())
        .unwrap_or_default();
    if value["isError"] == json!(true) {
        return Err(CapabilityError::failed(text.join("\n")));
    }
    Ok(match value.get("structuredContent") {
        Some(structured) if !structured.is_null() => structured.clone(),
        _ if text.len() == 1 => Value::String(text[0].to_owned()),
        _ => value["content"].clone(),
    })
}

/// One tool of an MCP server.
struct McpTool {
    manifest: CapabilityManifest,
    /// The tool's name on the server (the capability may be prefixed).
    tool: String,
    server: Weak<Server>,
}

impl McpTool {
    fn new(
        server: Weak<Server>,
        command: &str,
        tool: &rmcp::model::Tool,
        options: &McpAttach,
    ) -> Self {
        let mut parameters = Value::Object((*tool.input_schema).clone());
        if let Some(obj) = parameters.as_object_mut() {
            obj.remove("$schema");
        }
        let description = tool
            .description
            .as_deref()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("Tool `{}` of the MCP server `{command}`.", tool.name));
        let mut manifest = CapabilityManifest::new(
            options.name_of(&tool.name),
            description,
            CapabilityKind::Mcp,
            parameters,
        );
        manifest.returns = tool.output_schema.as_ref().map(|s| {
            let mut v = Value::Object((**s).clone());
            if let Some(obj) = v.as_object_mut() {
                obj.remove("$schema");
            }
            v
        });
        manifest.side_effect = options.side_effect_of(tool);
        Self {
            manifest,
            tool: tool.name.to_string(),
            server,
        }
    }
}

#[async_trait]
impl Capability for McpTool {
    fn manifest(&self) -> &CapabilityManifest {
        &self.manifest
    }

    async fn invoke(
        &self,
        _context: &InvocationContext,
        arguments: Value,
    ) -> Result<Value, CapabilityError> {
        let server = self.server.upgrade().ok_or_else(|| {
            CapabilityError::failed("the MCP server behind this tool was dropped")
        })?;
        server.call(&self.tool, arguments).await
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;
    use thinklio_core::fuzz;

    use super::tool_result;

    fn real() -> serde_json::Value {
        json!({
            "content": [{ "type": "text", "text": "Echo: hi" }, { "type": "image", "data": "aGk=", "mimeType": "image/png" }],
            "structuredContent": { "echo": "hi" },
            "isError": false
        })
    }

    #[test]
    fn a_result_reads_as_the_model_sees_it() {
        assert_eq!(tool_result(&real()).unwrap(), json!({ "echo": "hi" }));
        let one = json!({ "content": [{ "type": "text", "text": "Echo: hi" }] });
        assert_eq!(tool_result(&one).unwrap(), json!("Echo: hi"));
        let failed =
            json!({ "content": [{ "type": "text", "text": "no such file" }], "isError": true });
        assert_eq!(
            tool_result(&failed).unwrap_err().to_string(),
            "no such file"
        );
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        #[test]
        fn any_result_a_server_sends_is_read_without_panic(
            value in prop_oneof![fuzz::json(), fuzz::mutated(real())]
        ) {
            let _ = tool_result(&value);
        }
    }
}
