//! Jobs: dispatch, status, cancellation and the callback of outside work.

// The handlers share the imports and helpers (ids, ownership checks) of `api`.
use super::*;
use thinklio_core::step::payload::DispatchCall;

/// Work to run in the background.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DispatchJob {
    /// Your id of the user it works for.
    pub user: String,
    /// The capability that does the work (one the host lets the API dispatch).
    pub capability: String,
    /// Its input.
    #[serde(default)]
    pub input: Value,
    /// Your id of the request: dispatching again with it returns the same job.
    pub id: Option<String>,
}

/// A job with its subjobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// The job as stored (state, progress, result, error, ...).
    #[schema(value_type = Object)]
    pub job: thinklio_core::Job,
    /// Its subjobs.
    #[schema(value_type = Vec<Object>)]
    pub subjobs: Vec<thinklio_core::Job>,
}

pub(super) async fn job_view(
    host: &HttpHost,
    job: thinklio_core::Job,
) -> Result<JobView, ApiError> {
    // The job was found in the caller's account: read as that account.
    let account = thinklio_core::Actor::Account(job.principal.account);
    let subjobs = host.runtime.jobs().subjobs(account, job.id).await?;
    Ok(JobView { job, subjobs })
}

/// Dispatches a capability as a job: recorded as an interaction of the
/// user's `jobs` conversation (durable, governed, budgeted like any call),
/// run by the job worker; the job's result comes back to that conversation
/// as a follow-up and is readable here.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = DispatchJob,
    responses((status = 202, body = JobView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn dispatch_job(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<DispatchJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    user_id(&caller, &body.user)?;
    if !host.config.dispatchable.contains(&body.capability) {
        return Err(ApiError::bad_request(
            "job.not_dispatched",
            format!(
                "`{}` is not a capability this host dispatches",
                body.capability
            ),
        ));
    }
    let session = host
        .host(caller.account())
        .session(CHANNEL, &body.user, JOBS_CHAT)
        .await?;
    let call = DispatchCall::new(body.capability, body.input);
    let job = host
        .runtime
        .jobs()
        .dispatch(caller.actor(), session.id, call, body.id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&host, job).await?)))
}

pub(super) async fn own_job(
    host: &HttpHost,
    caller: &Caller,
    raw: &str,
) -> Result<thinklio_core::Job, ApiError> {
    let id: JobId = parse_id("job", raw)?;
    host.runtime
        .jobs()
        .get(caller.actor(), id)
        .await
        .map_err(|e| match e {
            thinklio_core::RuntimeError::Store(thinklio_core::StoreError::NotFound { .. }) => {
                ApiError::not_found("job.not_found", format!("no job {id}"))
            }
            thinklio_core::RuntimeError::Job(thinklio_core::JobError::Forbidden { .. }) => {
                ApiError::wrong_account("job")
            }
            other => other.into(),
        })
}

/// A job's state, progress and result, with its subjobs.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job")),
    responses((status = 200, body = JobView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn job_status(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = own_job(&host, &caller, &id).await?;
    Ok(Json(job_view(&host, job).await?))
}

/// Why a job is cancelled.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CancelJob {
    /// The reason, told to the job's observers.
    pub reason: Option<String>,
}

/// Cancels a job and its unfinished subjobs.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job")), request_body = CancelJob,
    responses((status = 200, body = JobView), (status = 409, body = ErrorBody, description = "The job has ended")))]
pub(super) async fn cancel_job(
    State(host): Host,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    body: Option<Json<CancelJob>>,
) -> Result<Json<JobView>, ApiError> {
    let job = own_job(&host, &caller, &id).await?;
    let reason = body
        .and_then(|Json(b)| b.reason)
        .unwrap_or_else(|| "cancelled through the HTTP API".to_owned());
    let job = host
        .runtime
        .jobs()
        .cancel(caller.actor(), job.id, &reason)
        .await?;
    Ok(Json(job_view(&host, job).await?))
}

/// The callback of outside work on a job (a webhook dispatched as a job
/// posts here, with the token it was given as `Authorization: Bearer`):
/// `{"status": "progress", "progress": …}`, `{"status": "resolved",
/// "result": …, "context": …}` or `{"status": "failed", "error": "…"}`.
#[utoipa::path(post, path = "/v1/jobs/{id}/report", tag = "jobs",
    params(("id" = String, Path, description = "The job")),
    request_body(content = Object, description = "A job report"),
    responses((status = 200, body = JobView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn report_job(
    State(host): Host,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(report): ApiJson<Value>,
) -> Result<Json<JobView>, ApiError> {
    let Some(token) = crate::http::presented_key(&headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "auth.missing_key",
            "the job's callback token is required: Authorization: Bearer <token>",
        ));
    };
    let id: JobId = parse_id("job", &id)?;
    let report: JobReport = serde_json::from_value(report)
        .map_err(|e| ApiError::bad_request("job.bad_report", e.to_string()))?;
    let job = host.runtime.jobs().report(id, token, report).await?;
    Ok(Json(job_view(&host, job).await?))
}
