//! Sessions, their messages (plain and streamed), their history and steps.

// The handlers share the imports and helpers (ids, ownership checks) of `api`.
use super::*;

/// A session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Its id.
    pub id: String,
    /// The user it acts for (the runtime's user id).
    pub user_id: String,
    /// The agent.
    pub agent: String,
    /// The conversation key (`CHAT` or `CHAT#N`).
    pub key: Option<String>,
    /// When it was opened (ms since the Unix epoch).
    pub created_at: i64,
    /// The approval mode chosen for the session (`observe`, `draft`,
    /// `autopilot`), if one was: it narrows the agent's, never widens it.
    pub approval_mode: Option<String>,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            id: s.id.to_string(),
            user_id: s.principal.user.to_string(),
            agent: s.agent_id.to_string(),
            key: s.key.clone(),
            created_at: s.created_at.as_millis(),
            approval_mode: s.approval_mode.map(|m| m.as_str().to_owned()),
        }
    }
}

/// Opens a conversation.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSession {
    /// Your id of the user (any string; the same string is the same user).
    pub user: String,
    /// Your id of the conversation; a new one when left out. The same user
    /// and conversation give the same session.
    pub conversation: Option<String>,
    /// Start the conversation's next session (the agent forgets the chat so far).
    #[serde(default)]
    pub new: bool,
    /// The agent to talk to: one registered with the server or stored by
    /// the account (`/v1/agents`); the server's own agent when left out.
    pub agent: Option<String>,
}

/// Opens (or finds) a session of the account's agent for a user.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = SessionView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "Another account's agent"),
        (status = 404, body = ErrorBody, description = "No such agent"),
        (status = 409, body = ErrorBody, description = "The agent is paused or archived")))]
pub(super) async fn create_session(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    user_id(&caller, &body.user)?;
    let conversation = body
        .conversation
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let channel_host = match body.agent {
        // Not kept: a host per name asked for would let a client grow
        // the server's memory without bound.
        Some(agent) if agent != host.config.agent => {
            Arc::new(thinklio_core::channel::ChannelHost::new(
                host.runtime.clone(),
                agent,
                AccountMembers::new(caller.account()),
            ))
        }
        _ => host.host(caller.account()),
    };
    let session = if body.new {
        channel_host
            .new_session(CHANNEL, &body.user, &conversation)
            .await?
    } else {
        channel_host
            .session(CHANNEL, &body.user, &conversation)
            .await?
    };
    Ok((StatusCode::CREATED, Json(SessionView::from(&session))))
}

/// Whose sessions.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UserQuery {
    /// Your id of the user.
    pub user: String,
}

/// Lists a user's sessions, oldest first.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(UserQuery),
    responses((status = 200, body = [SessionView]), (status = 401, body = ErrorBody)))]
pub(super) async fn list_sessions(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let user = user_id(&caller, &q.user)?;
    let mut sessions: Vec<SessionView> = host
        .runtime
        .sessions()
        .of_user(caller.actor(), user)
        .await?
        .iter()
        .filter(|s| s.channel == CHANNEL)
        .map(SessionView::from)
        .collect();
    sessions.sort_by_key(|s| s.created_at);
    Ok(Json(sessions))
}

/// A message to the session's agent.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct SendMessage {
    /// The text (may be empty when the message carries images).
    #[serde(default)]
    pub text: String,
    /// Your id of the message: sending it again returns the same reply
    /// instead of asking twice.
    pub id: Option<String>,
    /// Images the agent's model is shown with the text (PNG, JPEG, GIF or
    /// WebP; at most 8 of up to 5 MiB each unless the runtime says
    /// otherwise).
    #[serde(default)]
    pub images: Vec<ImageBody>,
}

/// One image of a message: its bytes as `data` (base64, with an optional
/// `media_type` checked against them), or a `url` the model's provider
/// fetches.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageBody {
    /// The bytes, base64 (standard alphabet).
    pub data: Option<String>,
    /// The media type of `data` (`image/png`).
    pub media_type: Option<String>,
    /// An `https` (or `http`) URL of the image.
    pub url: Option<String>,
}

impl ImageBody {
    fn input(self, index: usize) -> Result<ImageInput, ApiError> {
        use base64::Engine as _;
        let bad = |why: &str| {
            ApiError::bad_request("request.bad_image", format!("images[{index}]: {why}"))
        };
        match (self.data, self.url) {
            (Some(data), None) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|_| bad("`data` is not base64"))?;
                Ok(match self.media_type {
                    Some(media_type) => ImageInput::bytes_of_type(bytes, media_type),
                    None => ImageInput::bytes(bytes),
                })
            }
            (None, Some(url)) if self.media_type.is_none() => Ok(ImageInput::url(url)),
            (None, Some(_)) => Err(bad("`media_type` goes with `data`, not `url`")),
            _ => Err(bad("give either `data` or `url`")),
        }
    }
}

/// The same message as a form (`multipart/form-data`): a `text` field, an
/// optional `id` field, and one `image` file part per image (its
/// `Content-Type` is checked against its bytes).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Describes the form for the OpenAPI document.
pub struct SendMessageForm {
    /// The text.
    text: Option<String>,
    /// Your id of the message.
    id: Option<String>,
    /// The images, one file part each.
    #[schema(value_type = Vec<String>, format = Binary)]
    image: Vec<Vec<u8>>,
}

/// The body of `POST /v1/sessions/{id}/messages`, as JSON or as a form.
pub(super) struct MessageBody(Inbound);

impl MessageBody {
    fn from_json(body: SendMessage) -> Result<(Inbound, Option<String>), ApiError> {
        let mut inbound = Inbound::from(body.text);
        for (index, image) in body.images.into_iter().enumerate() {
            inbound = inbound.image(image.input(index)?);
        }
        Ok((inbound, body.id))
    }

    async fn from_form(
        mut form: axum::extract::Multipart,
    ) -> Result<(Inbound, Option<String>), ApiError> {
        let mut inbound = Inbound::from(String::new());
        let mut id = None;
        let failed = |e: axum::extract::multipart::MultipartError| {
            ApiError::new(e.status(), "request.bad_form", e.body_text())
        };
        while let Some(field) = form.next_field().await.map_err(failed)? {
            match field.name().unwrap_or_default() {
                "text" => inbound.text = field.text().await.map_err(failed)?,
                "id" => id = Some(field.text().await.map_err(failed)?),
                "image" => {
                    let media_type = field.content_type().map(str::to_owned);
                    let bytes = field.bytes().await.map_err(failed)?.to_vec();
                    inbound = inbound.image(match media_type {
                        // Clients send files they cannot name as octet-stream:
                        // their bytes say what they are.
                        Some(m) if m != "application/octet-stream" => {
                            ImageInput::bytes_of_type(bytes, m)
                        }
                        _ => ImageInput::bytes(bytes),
                    });
                }
                other => {
                    return Err(ApiError::bad_request(
                        "request.bad_form",
                        format!(
                            "unknown form field `{}` (text, id and image are read)",
                            other.chars().take(64).collect::<String>()
                        ),
                    ));
                }
            }
        }
        Ok((inbound, id))
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for MessageBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        let (inbound, id) = if is_form {
            let form = axum::extract::Multipart::from_request(req, state)
                .await
                .map_err(|r| ApiError::new(r.status(), "request.bad_form", r.body_text()))?;
            Self::from_form(form).await?
        } else {
            let ApiJson(body) = ApiJson::<SendMessage>::from_request(req, state).await?;
            Self::from_json(body)?
        };
        let mut inbound = inbound;
        inbound.id = id;
        Ok(Self(inbound))
    }
}

/// The agent's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyView {
    /// The interaction that produced it.
    pub interaction_id: String,
    /// The text.
    pub text: String,
    /// Steps taken.
    pub steps: u32,
    /// Input tokens used.
    pub input_tokens: u64,
    /// Output tokens used.
    pub output_tokens: u64,
    /// What it cost, in US dollars.
    pub cost_usd: f64,
    /// The calls waiting for a decision (step ids; decide them with `POST
    /// /v1/approvals/{id}`): while any waits, `text` is empty and the reply
    /// comes on the session's stream and in its history once all are decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
    /// For an agent that declares its answer's JSON Schema: the answer, as
    /// JSON (the same as `text`, parsed).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub answer: Option<Value>,
}

impl From<&Reply> for ReplyView {
    fn from(r: &Reply) -> Self {
        Self {
            interaction_id: r.interaction_id.to_string(),
            text: r.text.clone(),
            steps: r.steps,
            input_tokens: r.usage.input_tokens,
            output_tokens: r.usage.output_tokens,
            cost_usd: r.cost.as_usd(),
            waiting: r.waiting.iter().map(ToString::to_string).collect(),
            answer: r.answer.clone(),
        }
    }
}

/// Streaming choice.
#[derive(Debug, Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Answer as server-sent events (also chosen by `Accept: text/event-stream`).
    #[serde(default)]
    pub stream: bool,
}

/// Sends a message and returns the reply; streamed as server-sent events
/// (`interaction`, `step`, `token`, `reply`, `error`) when asked.
#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "The session"), StreamQuery),
    request_body(content(
        (SendMessage = "application/json"),
        (SendMessageForm = "multipart/form-data"))),
    responses(
        (status = 200, body = ReplyView, description = "The reply, or an event stream (text/event-stream)"),
        (status = 400, body = ErrorBody, description = "An empty message, or an image that is not PNG, JPEG, GIF or WebP"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody, description = "A body or an image larger than accepted"),
        (status = 429, body = ErrorBody)))]
pub(super) async fn send_message(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
    MessageBody(mut inbound): MessageBody,
) -> Result<Response, ApiError> {
    let session = own_session(&host, &caller, &id).await?;
    if let Some(message_id) = inbound.id.take() {
        inbound.id = Some(format!("{CHANNEL}:{}:{message_id}", session.id));
    }
    let wants_stream = q.stream
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        return Ok(stream::reply_stream(Arc::clone(&host), session, inbound).into_response());
    }
    // In a task of its own, so a request timeout or a client that goes
    // away leaves the interaction to finish.
    let runtime = host.runtime.clone();
    let reply = tokio::spawn(async move { runtime.send(session.id, inbound).await })
        .await
        .map_err(|e| ApiError::internal("host.task_failed", &e))??;
    Ok(Json(ReplyView::from(&reply)).into_response())
}

/// One exchange of a session.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnView {
    /// The interaction.
    pub interaction_id: String,
    /// What was said (for a job's follow-up, the notice).
    pub user: String,
    /// The images it carried (their ids).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// The reply.
    pub assistant: String,
    /// When it was said, in milliseconds since the Unix epoch.
    pub at: i64,
}

/// The session's exchanges so far, oldest first (job follow-ups included).
#[utoipa::path(get, path = "/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    responses((status = 200, body = [TurnView]), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn history(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<TurnView>>, ApiError> {
    let session = own_session(&host, &caller, &id).await?;
    let turns = host
        .runtime
        .sessions()
        .history(caller.actor(), session.id, 500)
        .await?;
    Ok(Json(
        turns
            .into_iter()
            .map(|t| TurnView {
                interaction_id: t.interaction_id.to_string(),
                user: t.user,
                images: t.images.iter().map(ToString::to_string).collect(),
                assistant: t.assistant,
                at: t.at.as_millis(),
            })
            .collect(),
    ))
}

/// Streams everything that happens in the session from now on, as
/// server-sent events: `step`, `token`, and `reply` for every reply (answers
/// and job follow-ups), until the client disconnects.
#[utoipa::path(get, path = "/v1/sessions/{id}/events", tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    responses((status = 200, description = "An event stream (text/event-stream)"), (status = 401, body = ErrorBody)))]
pub(super) async fn session_stream(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let session = own_session(&host, &caller, &id).await?;
    Ok(stream::session_stream(Arc::clone(&host), session).into_response())
}

/// The steps of an interaction, as stored (input, output, error, tokens, cost).
#[utoipa::path(get, path = "/v1/interactions/{id}/steps", tag = "sessions",
    params(("id" = String, Path, description = "The interaction")),
    responses((status = 200, body = Vec<Object>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn interaction_steps(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id: InteractionId = parse_id("interaction", &id)?;
    let steps = host
        .runtime
        .sessions()
        .steps(caller.actor(), id)
        .await
        .map_err(|e| interaction_error(id, e))?;
    Ok(Json(json!(steps)))
}

/// Cancels an interaction in flight, or one waiting for a decision: its
/// running step is settled as after a crash (an external call's outcome is
/// unknown, never repeated) and it ends failed with `interaction.cancelled`.
/// Answers whether there was anything to cancel.
#[utoipa::path(post, path = "/v1/interactions/{id}/cancel", tag = "sessions",
    params(("id" = String, Path, description = "The interaction")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn cancel_interaction(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id: InteractionId = parse_id("interaction", &id)?;
    let cancelled = host
        .runtime
        .sessions()
        .cancel(caller.actor(), id)
        .await
        .map_err(|e| interaction_error(id, e))?;
    Ok(Json(json!({ "cancelled": cancelled })))
}

/// An interaction route's error: 404 for an unknown interaction, 403 for
/// another account's.
fn interaction_error(id: InteractionId, e: thinklio_core::RuntimeError) -> ApiError {
    match e {
        thinklio_core::RuntimeError::Store(thinklio_core::StoreError::NotFound { .. }) => {
            ApiError::not_found("interaction.not_found", format!("no interaction {id}"))
        }
        thinklio_core::RuntimeError::Forbidden(_) => ApiError::wrong_account("interaction"),
        other => other.into(),
    }
}
