//! Recency and size bookkeeping for the size-bounded tiers (memory, disk): entries in order of
//! last use, each with its size, and the bytes they hold together.
//!
//! The order is the `lru` crate's linked hash map, so marking an entry used is one lookup and
//! a relink, with nothing allocated or cloned; keys are hashed with foldhash, seeded per
//! process.

use std::hash::Hash;

type Map<K, V> = lru::LruCache<K, (V, u64), foldhash::fast::RandomState>;

/// Entries ordered by last use, with their sizes; evicts the least recently used first.
pub(crate) struct Lru<K, V> {
    entries: Map<K, V>,
    bytes: u64,
}

impl<K: Eq + Hash, V> Lru<K, V> {
    pub(crate) fn new() -> Lru<K, V> {
        Lru {
            entries: Map::unbounded_with_hasher(foldhash::fast::RandomState::default()),
            bytes: 0,
        }
    }

    /// Records `key` holding `value` of `size` bytes as the most recently used entry; returns
    /// the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V, size: u64) -> Option<V> {
        self.bytes += size;
        let (old, old_size) = self.entries.put(key, (value, size))?;
        self.bytes -= old_size;
        Some(old)
    }

    /// The value of `key`, marked as just used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(value, _)| value)
    }

    /// The value of `key`, its recency unchanged.
    pub(crate) fn peek(&self, key: &K) -> Option<&V> {
        self.entries.peek(key).map(|(value, _)| value)
    }

    /// True if `key` has an entry.
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.entries.contains(key)
    }

    /// Forgets `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let (value, size) = self.entries.pop(key)?;
        self.bytes -= size;
        Some(value)
    }

    /// Removes and returns the least recently used entry.
    pub(crate) fn pop_oldest(&mut self) -> Option<(K, V)> {
        let (key, (value, size)) = self.entries.pop_lru()?;
        self.bytes -= size;
        Some((key, value))
    }

    /// Every entry, most recently used first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(key, (value, _))| (key, value))
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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
        lru.insert("a", 1, 10);
        lru.insert("b", 2, 20);
        lru.insert("c", 3, 30);
        assert_eq!(lru.get(&"a"), Some(&1));
        assert_eq!(lru.bytes(), 60);
        assert_eq!(lru.pop_oldest(), Some(("b", 2)));
        assert_eq!(lru.insert("c", 4, 5), Some(3));
        assert_eq!(lru.bytes(), 15);
        // A peek leaves the order as it was: "a" is still the oldest.
        assert_eq!(lru.peek(&"a"), Some(&1));
        assert_eq!(lru.pop_oldest(), Some(("a", 1)));
        assert_eq!(lru.remove(&"c"), Some(4));
        assert_eq!(lru.remove(&"c"), None);
        assert_eq!(lru.pop_oldest(), None);
        assert_eq!((lru.bytes(), lru.len()), (0, 0));
    }
}
