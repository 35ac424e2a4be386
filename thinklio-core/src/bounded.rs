//! Maps and sets of what a process remembers for speed (sessions of chats,
//! known users, warnings given) whose keys come from outside: each has a
//! cap, and when full it starts over, so no client can grow it without
//! bound. What is forgotten is read from the store again, which holds it.
//!
//! Starting over rather than evicting one entry keeps this a few lines and
//! costs a burst of store reads once per `cap` new keys; none of these
//! caches is on a path where that matters.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Insertion that never lets a collection grow past `cap` entries.
pub(crate) trait InsertBounded<T> {
    /// Inserts `item`, first emptying the collection if it holds `cap`
    /// entries or more.
    fn insert_bounded(&mut self, item: T, cap: usize);
}

impl<K: Hash + Eq, V> InsertBounded<(K, V)> for HashMap<K, V> {
    fn insert_bounded(&mut self, (key, value): (K, V), cap: usize) {
        if self.len() >= cap && !self.contains_key(&key) {
            self.clear();
        }
        self.insert(key, value);
    }
}

impl<T: Hash + Eq> InsertBounded<T> for HashSet<T> {
    fn insert_bounded(&mut self, item: T, cap: usize) {
        if self.len() >= cap && !self.contains(&item) {
            self.clear();
        }
        self.insert(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserting_many_keys_never_passes_the_cap() {
        let mut map = HashMap::new();
        let mut set = HashSet::new();
        for n in 0..10_000 {
            map.insert_bounded((n, n), 100);
            set.insert_bounded(n, 100);
            assert!(map.len() <= 100 && set.len() <= 100);
            assert_eq!(map.get(&n), Some(&n), "the newest is kept");
            assert!(set.contains(&n));
        }
        // A key already present is replaced, not a reason to start over.
        let before = map.len();
        map.insert_bounded((9_999, 0), before);
        assert_eq!(map.len(), before);
    }
}
