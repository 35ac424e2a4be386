//! The registry of capabilities a runtime can call: populated at start-up,
//! changeable at run time.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::{Capability, CapabilityError, CapabilityManifest, InvocationContext};
use crate::model::ToolDefinition;

/// A capability with its compiled schemas.
pub struct RegisteredCapability {
    capability: Arc<dyn Capability>,
    parameters: jsonschema::Validator,
    returns: Option<jsonschema::Validator>,
}

impl fmt::Debug for RegisteredCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredCapability")
            .field("manifest", self.capability.manifest())
            .finish_non_exhaustive()
    }
}

impl RegisteredCapability {
    /// Compiles the manifest's schemas; an invalid name or schema is refused.
    pub fn new(capability: Arc<dyn Capability>) -> Result<Self, CapabilityError> {
        let m = capability.manifest();
        let invalid = |reason: String| CapabilityError::InvalidManifest {
            name: m.name.clone(),
            reason,
        };
        let name_ok = !m.name.is_empty()
            && m.name.len() <= 64
            && m.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(invalid("the name must be 1 to 64 of [a-zA-Z0-9_-]".into()));
        }
        if m.parameters.get("type").and_then(Value::as_str) != Some("object") {
            return Err(invalid(
                "the parameter schema must have \"type\": \"object\"".into(),
            ));
        }
        let parameters = jsonschema::validator_for(&m.parameters)
            .map_err(|e| invalid(format!("parameter schema: {e}")))?;
        let returns = m
            .returns
            .as_ref()
            .map(|r| {
                jsonschema::validator_for(r).map_err(|e| invalid(format!("return schema: {e}")))
            })
            .transpose()?;
        Ok(Self {
            capability,
            parameters,
            returns,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &CapabilityManifest {
        self.capability.manifest()
    }

    /// The tool definition the model sees.
    pub fn tool_definition(&self) -> ToolDefinition {
        let m = self.manifest();
        ToolDefinition {
            name: m.name.clone(),
            description: m.description.clone(),
            parameters: m.parameters.clone(),
        }
    }

    /// Parses the model's raw argument text and validates it against the
    /// parameter schema. Empty text counts as `{}`.
    pub fn parse_arguments(&self, raw: &str) -> Result<Value, CapabilityError> {
        let raw = raw.trim();
        let value: Value = if raw.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_str(raw).map_err(|e| CapabilityError::InvalidJson(e.to_string()))?
        };
        self.validate_arguments(&value)?;
        Ok(value)
    }

    /// Validates arguments against the parameter schema.
    pub fn validate_arguments(&self, value: &Value) -> Result<(), CapabilityError> {
        let problems = describe(&self.parameters, value);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CapabilityError::InvalidArguments(problems))
        }
    }

    /// Invokes the capability and checks the result against the return schema.
    pub async fn invoke(
        &self,
        context: &InvocationContext,
        arguments: Value,
    ) -> Result<Value, CapabilityError> {
        let result = self.capability.invoke(context, arguments).await?;
        if let Some(returns) = &self.returns {
            let problems = describe(returns, &result);
            if !problems.is_empty() {
                return Err(CapabilityError::InvalidResult(problems));
            }
        }
        Ok(result)
    }

    /// Dispatches the capability as a job; a result it gives at once is
    /// checked against the return schema.
    pub async fn dispatch(
        &self,
        context: &InvocationContext,
        arguments: Value,
    ) -> Result<super::Dispatch, CapabilityError> {
        let dispatch = self.capability.dispatch(context, arguments).await?;
        if let (super::Dispatch::Done(result), Some(returns)) = (&dispatch, &self.returns) {
            let problems = describe(returns, result);
            if !problems.is_empty() {
                return Err(CapabilityError::InvalidResult(problems));
            }
        }
        Ok(dispatch)
    }
}

/// What `value` breaks of `validator`'s schema (the first five problems,
/// each with where), in words a model can act on; empty when it fits.
pub(crate) fn describe(validator: &jsonschema::Validator, value: &Value) -> String {
    validator
        .iter_errors(value)
        .take(5)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("at {path}: {e}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The capabilities a runtime can call, by name. Cloning shares the registry.
///
/// A name is taken once: registering a second capability under a name in
/// use is refused ([`CapabilityError::NameTaken`]), so no capability —
/// a built-in, a host's function, a tool an MCP server announces later —
/// silently replaces another. [`CapabilityRegistry::replace`] replaces on
/// purpose; [`CapabilityRegistry::register_owned`] lets one owner (an MCP
/// server following its tool list) update what it registered, and only
/// that.
#[derive(Clone, Default)]
pub struct CapabilityRegistry {
    entries: Arc<RwLock<BTreeMap<String, Entry>>>,
}

#[derive(Clone)]
struct Entry {
    capability: Arc<RegisteredCapability>,
    owner: Option<String>,
}

impl fmt::Debug for CapabilityRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl CapabilityRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a capability; refused if its name is taken.
    pub fn register(&self, capability: impl Capability) -> Result<(), CapabilityError> {
        self.register_arc(Arc::new(capability))
    }

    /// Adds a shared capability; refused if its name is taken.
    pub fn register_arc(&self, capability: Arc<dyn Capability>) -> Result<(), CapabilityError> {
        self.insert(capability, None, false)
    }

    /// Adds a capability, or replaces the one of the same name: for a host
    /// that means to.
    pub fn replace(&self, capability: impl Capability) -> Result<(), CapabilityError> {
        self.insert(Arc::new(capability), None, true)
    }

    /// Adds a capability on behalf of `owner`, or replaces one `owner`
    /// registered before; refused if the name belongs to anyone else.
    pub fn register_owned(
        &self,
        capability: impl Capability,
        owner: &str,
    ) -> Result<(), CapabilityError> {
        self.insert(Arc::new(capability), Some(owner.to_owned()), false)
    }

    fn insert(
        &self,
        capability: Arc<dyn Capability>,
        owner: Option<String>,
        replace: bool,
    ) -> Result<(), CapabilityError> {
        let capability = Arc::new(RegisteredCapability::new(capability)?);
        let name = capability.manifest().name.clone();
        let mut entries = self.write();
        if let Some(existing) = entries.get(&name) {
            let same_owner = owner.is_some() && existing.owner == owner;
            if !replace && !same_owner {
                return Err(CapabilityError::NameTaken {
                    name,
                    owner: existing.owner.clone(),
                });
            }
        }
        entries.insert(name, Entry { capability, owner });
        Ok(())
    }

    /// Removes a capability; returns whether it was there.
    pub fn remove(&self, name: &str) -> bool {
        self.write().remove(name).is_some()
    }

    /// Removes a capability `owner` registered; returns whether it was there.
    pub fn remove_owned(&self, name: &str, owner: &str) -> bool {
        let mut entries = self.write();
        if entries
            .get(name)
            .is_some_and(|e| e.owner.as_deref() == Some(owner))
        {
            entries.remove(name);
            return true;
        }
        false
    }

    /// The capability called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<RegisteredCapability>> {
        self.read().get(name).map(|e| Arc::clone(&e.capability))
    }

    /// Every name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Every manifest, sorted by name.
    pub fn manifests(&self) -> Vec<CapabilityManifest> {
        self.read()
            .values()
            .map(|e| e.capability.manifest().clone())
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        // A poisoned lock only means a writer panicked mid-insert of a whole
        // entry; the map itself is still consistent.
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }
}
