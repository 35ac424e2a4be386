//! Tools of MCP servers as capabilities, through the `rmcp` client.
//!
//! [`McpServer::spawn`] starts a server process and speaks MCP to it over
//! stdio; [`McpServer::connect`] reaches one over streamable HTTP;
//! [`McpServer::attach`] registers every tool it lists as a
//! capability of kind `mcp` (its input schema is the parameter schema, its
//! output schema the return schema, its annotations the side-effect class)
//! and keeps the registry in step when the server announces that its tool
//! list changed.
//!
//! A server that exits is reported: the call that was running fails with a
//! clear error (never a hang: the harness's timeout bounds every call), and
//! the next call starts the server again. A call is never repeated on a
//! restarted server, since whether it took effect is unknown.
//!
//! Notifications a server sends before its `initialize` response (the
//! reference server sends one) are skipped by the `rmcp` handshake.

use std::borrow::Cow;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{NotificationContext, RoleClient, RunningService};
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
    /// A tool could not be registered.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
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
    Http { url: String },
}

struct Server {
    /// The command line or URL, for messages.
    command: String,
    target: Target,
    client: Mutex<Option<Client>>,
    changed: Arc<tokio::sync::Notify>,
    pid: std::sync::Mutex<Option<u32>>,
    /// The names registered for this server, to remove those that disappear.
    registered: std::sync::Mutex<Vec<String>>,
}

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
        // The MCP client's HTTP stack leaves the choice of TLS provider to
        // the application; the first connection picks ring, which the rest
        // of Thinklio's HTTP already uses. A provider set earlier by the
        // host is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self::start(
            url,
            Target::Http {
                url: url.to_owned(),
            },
        )
        .await
    }

    async fn start(command: &str, target: Target) -> Result<Self, McpError> {
        let server = Arc::new(Server {
            command: command.to_owned(),
            target,
            client: Mutex::new(None),
            changed: Arc::new(tokio::sync::Notify::new()),
            pid: std::sync::Mutex::new(None),
            registered: std::sync::Mutex::new(Vec::new()),
        });
        let client = server.connect().await?;
        *server.client.lock().await = Some(client);
        Ok(Self { server })
    }

    /// The process id of the running server, if it runs as a process of ours.
    pub async fn pid(&self) -> Option<u32> {
        let guard = self.server.client.lock().await;
        guard
            .as_ref()
            .and_then(|_| self.server.pid.lock().ok().and_then(|p| *p))
    }

    /// Registers every tool of the server in `registry`, and keeps them in
    /// step with the server's tool list from then on. Returns the names.
    pub async fn attach(&self, registry: &CapabilityRegistry) -> Result<Vec<String>, McpError> {
        let names = self.server.sync(registry).await?;
        let weak = Arc::downgrade(&self.server);
        let registry = registry.clone();
        let changed = Arc::clone(&self.server.changed);
        tokio::spawn(async move {
            loop {
                changed.notified().await;
                let Some(server) = weak.upgrade() else { return };
                if let Err(e) = server.sync(&registry).await {
                    tracing::warn!(server = %server.command, error = %e, "could not re-read the MCP tool list");
                }
            }
        });
        Ok(names)
    }
}

impl Server {
    async fn connect(&self) -> Result<Client, McpError> {
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
            Target::Http { url } => {
                let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                handler.serve(transport).await
            }
        };
        served.map_err(|e| self.protocol(e))
    }

    fn protocol(&self, e: impl std::fmt::Display) -> McpError {
        McpError::Protocol {
            command: self.command.clone(),
            message: e.to_string(),
        }
    }

    /// Reads the tool list and brings the registry in step with it.
    async fn sync(
        self: &Arc<Self>,
        registry: &CapabilityRegistry,
    ) -> Result<Vec<String>, McpError> {
        let tools = {
            let guard = self.client.lock().await;
            let client = guard
                .as_ref()
                .ok_or_else(|| self.protocol("the server is not running"))?;
            client
                .list_all_tools()
                .await
                .map_err(|e| self.protocol(e))?
        };
        let mut names = Vec::with_capacity(tools.len());
        for tool in tools {
            let capability = McpTool::new(Arc::downgrade(self), &self.command, &tool);
            registry.register(capability)?;
            names.push(tool.name.to_string());
        }
        let mut registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        for gone in registered.iter().filter(|n| !names.contains(n)) {
            registry.remove(gone);
        }
        *registered = names.clone();
        Ok(names)
    }

    /// Calls a tool, starting the server again first if it has exited.
    async fn call(&self, tool: &str, arguments: Value) -> Result<Value, CapabilityError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            tracing::warn!(server = %self.command, "the MCP server is not running; starting it again");
            *guard = None;
            let client = self.connect().await.map_err(|e| {
                CapabilityError::failed(format!(
                    "the MCP server is down and could not be restarted: {e}"
                ))
            })?;
            *guard = Some(client);
        }
        let client = guard
            .as_ref()
            .ok_or_else(|| CapabilityError::failed("the MCP server is not running"))?;
        let mut params = CallToolRequestParams::new(Cow::Owned(tool.to_owned()));
        if let Value::Object(map) = arguments {
            params = params.with_arguments(map);
        }
        let result = match client.call_tool(params).await {
            Ok(result) => result,
            Err(e) => {
                // The connection is not trusted again: the next call starts
                // the server anew. This call is not repeated.
                *guard = None;
                return Err(CapabilityError::failed(format!(
                    "the MCP server `{}` failed during the call (it may have exited): {e}",
                    self.command
                )));
            }
        };
        let value = serde_json::to_value(&result)
            .map_err(|e| CapabilityError::InvalidResult(e.to_string()))?;
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
}

/// One tool of an MCP server.
struct McpTool {
    manifest: CapabilityManifest,
    server: Weak<Server>,
}

impl McpTool {
    fn new(server: Weak<Server>, command: &str, tool: &rmcp::model::Tool) -> Self {
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
            tool.name.to_string(),
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
        let hints = tool.annotations.as_ref();
        manifest.side_effect = match (
            hints.and_then(|a| a.read_only_hint),
            hints.and_then(|a| a.idempotent_hint),
        ) {
            (Some(true), _) => SideEffect::ReadOnly,
            (_, Some(true)) => SideEffect::Idempotent,
            _ => SideEffect::External,
        };
        Self { manifest, server }
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
        server.call(&self.manifest.name, arguments).await
    }
}
