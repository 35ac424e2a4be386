//! Trace export over OTLP (feature `otlp`): the runtime's spans (one per
//! step, with OpenTelemetry's GenAI attribute names) sent to a collector
//! over OTLP/HTTP in protobuf, batched off the request path.
//!
//! ```no_run
//! # fn main() -> Result<(), thinklio_examples::traces::TraceError> {
//! // Logs to standard error, spans to a collector on its OTLP/HTTP port.
//! let traces = thinklio_examples::traces::init("http://127.0.0.1:4318", "thinklio-http")?;
//! // … serve …
//! traces.shutdown(); // sends what is still batched
//! # Ok(())
//! # }
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Why spans cannot be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The endpoint is not an `http://` or `https://` URL.
    #[error("the OTLP endpoint must be an http:// or https:// URL, not {0:?}")]
    Endpoint(String),
    /// The exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber is installed already.
    #[error("cannot install the trace subscriber: {0}")]
    Subscriber(String),
}

/// The exporting side of a host's traces: flush before reading what a
/// collector got, shut down on the way out.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Sends every span ended so far.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "could not flush spans to the OTLP collector");
        }
    }

    /// Sends what is batched and stops exporting.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "could not shut the OTLP exporter down");
        }
    }
}

/// A `tracing` layer exporting spans to the collector at `endpoint` (its
/// OTLP/HTTP base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` names it: spans go
/// to `{endpoint}/v1/traces`) as the service `service`.
pub fn layer<S>(
    endpoint: &str,
    service: &str,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>,
        Traces,
    ),
    TraceError,
>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let base = endpoint.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(TraceError::Endpoint(endpoint.to_owned()));
    }
    // The exporter's HTTP client speaks TLS through rustls and expects the
    // process to have chosen its cryptography: ring, as the rest of
    // Thinklio's clients use (a provider installed already stays).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{base}/v1/traces"))
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("thinklio");
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Traces { provider },
    ))
}

/// Logs to standard error (filtered by `RUST_LOG`, warnings by default, as
/// [`init_logging`](crate::init_logging)) and exports every span of the
/// runtime (level `info` and above) to `endpoint`.
pub fn init(endpoint: &str, service: &str) -> Result<Traces, TraceError> {
    use tracing_subscriber::Layer as _;
    let (otlp, traces) = layer(endpoint, service)?;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        );
    tracing_subscriber::registry()
        .with(logs)
        .with(otlp.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
        .try_init()
        .map_err(|e| TraceError::Subscriber(e.to_string()))?;
    Ok(traces)
}
