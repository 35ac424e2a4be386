//! Typed Rust functions as capabilities: the parameter and return schemas are
//! derived from the argument and result types with `schemars`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    Capability, CapabilityError, CapabilityKind, CapabilityManifest, InvocationContext, SideEffect,
    TrustLevel,
};
use crate::step::StepMode;
use crate::usage::Cost;

type Handler = Arc<
    dyn Fn(InvocationContext, Value) -> BoxFuture<'static, Result<Value, CapabilityError>>
        + Send
        + Sync,
>;

/// A Rust function exposed as a capability.
///
/// ```
/// use schemars::JsonSchema;
/// use serde::Deserialize;
/// use thinklio_core::{FunctionCapability, SideEffect};
///
/// #[derive(Deserialize, JsonSchema)]
/// struct Add {
///     /// First addend.
///     a: i64,
///     /// Second addend.
///     b: i64,
/// }
///
/// let add = FunctionCapability::builder("add", "Adds two integers.")
///     .side_effect(SideEffect::ReadOnly)
///     .handler(|args: Add| async move { Ok::<_, std::convert::Infallible>(args.a + args.b) });
/// assert_eq!(add.manifest_ref().parameters["required"], serde_json::json!(["a", "b"]));
/// ```
pub struct FunctionCapability {
    manifest: CapabilityManifest,
    handler: Handler,
}

impl fmt::Debug for FunctionCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionCapability")
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

impl FunctionCapability {
    /// Starts a function capability called `name`.
    pub fn builder(
        name: impl Into<String>,
        description: impl Into<String>,
    ) -> FunctionCapabilityBuilder {
        FunctionCapabilityBuilder {
            manifest: CapabilityManifest::new(
                name,
                description,
                CapabilityKind::Function,
                Value::Null,
            ),
        }
    }

    /// Its manifest (also available through [`Capability::manifest`]).
    pub fn manifest_ref(&self) -> &CapabilityManifest {
        &self.manifest
    }
}

/// Sets up a [`FunctionCapability`]; finish with [`handler`](Self::handler) or
/// [`handler_with_context`](Self::handler_with_context).
#[derive(Debug, Clone)]
pub struct FunctionCapabilityBuilder {
    manifest: CapabilityManifest,
}

impl FunctionCapabilityBuilder {
    /// Sets the side-effect class (default `read_only`).
    pub fn side_effect(mut self, side_effect: SideEffect) -> Self {
        self.manifest.side_effect = side_effect;
        self
    }

    /// Sets the trust level an agent needs (default `standard`).
    pub fn trust_level(mut self, level: TrustLevel) -> Self {
        self.manifest.trust_level = level;
        self
    }

    /// Sets the timeout of one call (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.manifest.timeout = timeout;
        self
    }

    /// Sets the default mode (default `immediate`).
    pub fn default_mode(mut self, mode: StepMode) -> Self {
        self.manifest.default_mode = mode;
        self
    }

    /// Sets, for runs as a job, when observers hear of partial output and
    /// how a job waiting on its subjobs ends.
    pub fn usefulness(mut self, usefulness: crate::job::Usefulness) -> Self {
        self.manifest.usefulness = usefulness;
        self
    }

    /// Sets what one call usually costs.
    pub fn cost_hint(mut self, cost: Cost) -> Self {
        self.manifest.cost_hint = Some(cost);
        self
    }

    /// Finishes with a function of the typed arguments.
    pub fn handler<A, R, E, F, Fut>(self, f: F) -> FunctionCapability
    where
        A: JsonSchema + DeserializeOwned + Send + 'static,
        R: Serialize + JsonSchema + 'static,
        E: fmt::Display + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.handler_with_context(move |_ctx: InvocationContext, args: A| f(args))
    }

    /// Finishes with a function of the invocation context and the typed arguments.
    pub fn handler_with_context<A, R, E, F, Fut>(mut self, f: F) -> FunctionCapability
    where
        A: JsonSchema + DeserializeOwned + Send + 'static,
        R: Serialize + JsonSchema + 'static,
        E: fmt::Display + 'static,
        F: Fn(InvocationContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.manifest.parameters = schema_of::<A>();
        self.manifest.returns = Some(schema_of::<R>());
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |ctx, value| {
            let f = Arc::clone(&f);
            async move {
                let args: A = serde_json::from_value(value)
                    .map_err(|e| CapabilityError::InvalidArguments(e.to_string()))?;
                let result = f(ctx, args).await.map_err(CapabilityError::failed)?;
                serde_json::to_value(result)
                    .map_err(|e| CapabilityError::InvalidResult(e.to_string()))
            }
            .boxed()
        });
        FunctionCapability {
            manifest: self.manifest,
            handler,
        }
    }
}

/// The JSON Schema of `T` as a tool's parameter schema: draft 2020-12 without
/// the `$schema` marker, which some providers reject.
fn schema_of<T: JsonSchema>() -> Value {
    let mut value = schemars::schema_for!(T).to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("$schema");
    }
    value
}

#[async_trait]
impl Capability for FunctionCapability {
    fn manifest(&self) -> &CapabilityManifest {
        &self.manifest
    }

    async fn invoke(
        &self,
        context: &InvocationContext,
        arguments: Value,
    ) -> Result<Value, CapabilityError> {
        (self.handler)(context.clone(), arguments).await
    }
}
