//! Recency and size bookkeeping for the size-bounded tiers (memory, disk): which entry was used
//! least recently, and how many bytes all entries hold.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Entries ordered by last use, with their sizes; evicts the least recently used first.
#[derive(Debug)]
pub(crate) struct Lru<K> {
    entries: HashMap<K, (u64, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    bytes: u64,
}

impl<K: Clone + Eq + Hash> Lru<K> {
    pub(crate) fn new() -> Lru<K> {
        Lru { entries: HashMap::new(), order: BTreeMap::new(), tick: 0, bytes: 0 }
    }

    /// Records `key` holding `size` bytes as the most recently used entry, replacing any
    /// previous size.
    pub(crate) fn insert(&mut self, key: K, size: u64) {
        self.remove(&key);
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (self.tick, size));
        self.bytes += size;
    }

    /// Marks `key` as just used.
    pub(crate) fn touch(&mut self, key: &K) {
        if let Some((tick, size)) = self.entries.get(key).copied() {
            self.order.remove(&tick);
            self.tick += 1;
            self.order.insert(self.tick, key.clone());
            self.entries.insert(key.clone(), (self.tick, size));
        }
    }

    /// Forgets `key`; true if it was present.
    pub(crate) fn remove(&mut self, key: &K) -> bool {
        match self.entries.remove(key) {
            Some((tick, size)) => {
                self.order.remove(&tick);
                self.bytes -= size;
                true
            }
            None => false,
        }
    }

    /// Removes and returns the least recently used key.
    pub(crate) fn pop_oldest(&mut self) -> Option<K> {
        let (_, key) = self.order.pop_first()?;
        let (_, size) = self.entries.remove(&key).expect("every ordered key has an entry");
        self.bytes -= size;
        Some(key)
    }

    /// Bytes held by all entries.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_first_and_sizes_add_up() {
        let mut lru = Lru::new();
        lru.insert("a", 10);
        lru.insert("b", 20);
        lru.insert("c", 30);
        lru.touch(&"a");
        assert_eq!(lru.bytes(), 60);
        assert_eq!(lru.pop_oldest(), Some("b"));
        lru.insert("c", 5);
        assert_eq!(lru.bytes(), 15);
        assert_eq!(lru.pop_oldest(), Some("a"));
        assert!(lru.remove(&"c"));
        assert_eq!(lru.pop_oldest(), None);
        assert_eq!(lru.bytes(), 0);
    }
}
