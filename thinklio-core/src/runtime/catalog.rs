//! Serving stored agents ([`crate::catalog`]): which definition a new
//! message runs with (the agent's current version, refused while paused or
//! archived), and which one a started interaction resumes with (the
//! version it recorded).

use std::sync::Arc;

use super::{Inner, RuntimeError};
use crate::agent::AgentDefinition;
use crate::catalog::{AgentState, StoredAgent};
use crate::ids::AgentId;
use crate::interaction::Interaction;

impl Inner {
    /// The definition a new message to `id` runs with, and its stored
    /// version (`None` for an agent registered in code). A stored agent is
    /// read from the store on a shared store (one row: another process may
    /// have changed it), from memory otherwise; paused and archived agents
    /// refuse.
    pub(crate) async fn serve_agent(
        self: &Arc<Self>,
        id: &AgentId,
    ) -> Result<(Arc<AgentDefinition>, Option<u32>), RuntimeError> {
        let known = self.stored_version(id);
        if known.is_none()
            && let Ok(agent) = self.agent(id)
        {
            return Ok((agent, None));
        }
        let (version, state) = match known {
            Some(known) if !self.config.shared_store => known,
            _ => {
                let Some(stored) = self.store.stored_agent(id).await? else {
                    self.forget_stored(id);
                    return Err(RuntimeError::UnknownAgent(id.clone()));
                };
                self.learn(stored)?
            }
        };
        match state {
            AgentState::Paused => Err(RuntimeError::AgentPaused(id.clone())),
            AgentState::Archived => Err(RuntimeError::AgentArchived(id.clone())),
            _ => Ok((self.agent(id)?, Some(version))),
        }
    }

    /// The definition `interaction` runs with: for a stored agent, the
    /// version it recorded, whatever the agent's state is now (work it
    /// started goes on).
    pub(crate) async fn agent_of(
        self: &Arc<Self>,
        interaction: &Interaction,
    ) -> Result<Arc<AgentDefinition>, RuntimeError> {
        let id = &interaction.agent_id;
        let Some(version) = interaction.agent_version else {
            return self.agent(id);
        };
        if self.stored_version(id).map(|(v, _)| v) == Some(version) {
            return self.agent(id);
        }
        // Not the version this runtime serves: read it (a newer one is
        // learnt, for the messages after).
        if self.stored_version(id).is_none_or(|(v, _)| v < version)
            && let Some(stored) = self.store.stored_agent(id).await?
            && stored.version == version
        {
            self.learn(stored)?;
            return self.agent(id);
        }
        let old = self.store.agent_version(id, version).await?;
        old.definition.check().map_err(RuntimeError::Config)?;
        Ok(Arc::new(old.definition))
    }

    /// Serves `stored` from now on (when newer than what is served);
    /// returns its version and state.
    pub(crate) fn learn(&self, stored: StoredAgent) -> Result<(u32, AgentState), RuntimeError> {
        let id = stored.definition.id.clone();
        let fresh = (stored.version, stored.state);
        let known = self.stored_version(&id);
        if known.is_none_or(|(v, _)| v < stored.version) {
            self.register_agent(stored.definition)?;
        }
        let mut versions = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        match versions.get(&id) {
            Some(&(v, _)) if v > fresh.0 => Ok(versions[&id]),
            _ => {
                versions.insert(id, fresh);
                Ok(fresh)
            }
        }
    }

    /// The version and state of a stored agent this runtime serves.
    pub(crate) fn stored_version(&self, id: &AgentId) -> Option<(u32, AgentState)> {
        self.stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    fn forget_stored(&self, id: &AgentId) {
        let was_stored = self
            .stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some();
        if was_stored {
            self.agents
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
    }
}
