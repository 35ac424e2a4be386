//! One async lock per session, so that messages of a session are processed in
//! order while different sessions run concurrently. Entries are dropped when
//! no one holds or waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::ids::SessionId;

#[derive(Default)]
pub(crate) struct SessionLocks {
    map: Arc<Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<()>>>>>,
}

pub(crate) struct SessionGuard {
    session: SessionId,
    map: Arc<Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<()>>>>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl SessionLocks {
    pub(crate) async fn lock(&self, session: SessionId) -> SessionGuard {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(map.entry(session).or_default())
        };
        let guard = lock.lock_owned().await;
        SessionGuard {
            session,
            map: Arc::clone(&self.map),
            guard: Some(guard),
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        // Release the lock first, then drop the entry if nobody else holds a
        // reference (the map's own is the only one left).
        self.guard.take();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(&self.session)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.session);
        }
    }
}
