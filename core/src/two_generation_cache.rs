//! A bounded map in two generations: the eviction of both memos (seal and open).
//!
//! Entries go into the young generation. When it holds half the bound, the old generation
//! is dropped whole and the young one becomes the old one; a hit in the old generation
//! moves the entry back to the young one. So at most `max_entries` (rounded up to even)
//! entries are held, what was used within the last half-bound of inserts stays, and
//! eviction costs no bookkeeping per hit (no LRU list). Dropped entries are dropped as
//! values: a key or value type that wipes itself on drop is wiped on eviction.
//!
//! Hashed with foldhash: several times cheaper than SipHash on short keys and still keyed
//! per process, so chosen keys cannot be made to collide (no hash flooding).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub struct TwoGenerationCache<K, V> {
    young: Map<K, V>,
    old: Map<K, V>,
    /// Entries per generation: `max_entries` / 2, rounded up.
    generation: usize,
}

impl<K: Hash + Eq, V> TwoGenerationCache<K, V> {
    /// At most `max_entries` entries (rounded up to even). 0 holds one entry at a time;
    /// callers that want no cache check their own limit first.
    pub fn new(max_entries: usize) -> Self {
        TwoGenerationCache {
            young: Map::default(),
            old: Map::default(),
            generation: max_entries.div_ceil(2),
        }
    }

    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.young = Map::default();
        self.old = Map::default();
    }

    /// `read` of the value of `key`, if `accept` takes it: from the young generation, or
    /// moved there from the old one. An old entry that `accept` refuses is dropped.
    ///
    /// The value is handed to `read` rather than returned: a reference returned from a
    /// young hit would hold `self` borrowed for the rest of the function (the borrow
    /// checker's NLL limit), costing a second lookup on the hot path.
    pub fn get<Q, R>(
        &mut self,
        key: &Q,
        accept: impl Fn(&V) -> bool,
        read: impl FnOnce(&V) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.young.get(key) {
            if accept(v) {
                return Some(read(v));
            }
        }
        let (k, v) = self.old.remove_entry(key)?;
        if !accept(&v) {
            return None;
        }
        let r = read(&v);
        self.insert(k, v);
        Some(r)
    }

    /// Inserts (or replaces) `key` in the young generation, aging the generations first if
    /// it is full.
    pub fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.generation {
            // The old generation is dropped; the young one ages.
            self.old = core::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A value that counts its drops.
    struct Counted(u32, Rc<Cell<u32>>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.set(self.1.get() + 1);
        }
    }

    fn any(_: &Counted) -> bool {
        true
    }

    #[test]
    fn the_old_generation_is_dropped_when_the_young_one_fills() {
        let drops = Rc::new(Cell::new(0));
        let mut c = TwoGenerationCache::new(4);
        for i in 0..4u32 {
            c.insert(i, Counted(i, Rc::clone(&drops)));
        }
        // 0, 1 aged into the old generation when 2 came; 2, 3 are young.
        assert_eq!((c.len(), drops.get()), (4, 0));
        c.insert(4, Counted(4, Rc::clone(&drops)));
        // 0 and 1 are gone (dropped), 2, 3 old, 4 young.
        assert_eq!((c.len(), drops.get()), (3, 2));
        assert!(c.get(&0, any, |_| ()).is_none() && c.get(&1, any, |_| ()).is_none());
        assert_eq!(c.get(&3, any, |v| v.0), Some(3));
        assert_eq!(c.get(&4, any, |v| v.0), Some(4));
    }

    #[test]
    fn a_hit_in_the_old_generation_survives_the_next_aging() {
        let drops = Rc::new(Cell::new(0));
        let mut c = TwoGenerationCache::new(4);
        for i in 0..4u32 {
            c.insert(i, Counted(i, Rc::clone(&drops)));
        }
        // 0 is old: the hit moves it to the young generation (which ages first: full).
        assert_eq!(c.get(&0, any, |v| v.0), Some(0));
        c.insert(5, Counted(5, Rc::clone(&drops)));
        c.insert(6, Counted(6, Rc::clone(&drops)));
        assert_eq!(c.get(&0, any, |v| v.0), Some(0), "kept");
        assert!(c.get(&1, any, |_| ()).is_none(), "not used: dropped");
        assert!(c.len() <= 4);
    }

    #[test]
    fn it_never_holds_more_than_its_bound() {
        for max in [1usize, 2, 3, 8, 9] {
            let mut c = TwoGenerationCache::new(max);
            for i in 0..100u32 {
                c.insert(i, i);
                c.get(&(i / 2), |_| true, |_| ());
                assert!(c.len() <= max + max % 2, "{max}: {}", c.len());
            }
        }
    }

    #[test]
    fn a_refused_entry_is_no_hit_and_an_old_one_is_dropped() {
        let drops = Rc::new(Cell::new(0));
        let mut c = TwoGenerationCache::new(4);
        c.insert(1u32, Counted(1, Rc::clone(&drops)));
        assert!(
            c.get(&1, |_| false, |_| ()).is_none(),
            "young: refused, kept"
        );
        assert_eq!((c.len(), drops.get()), (1, 0));
        c.insert(2, Counted(2, Rc::clone(&drops)));
        c.insert(3, Counted(3, Rc::clone(&drops)));
        // 1 and 2 are old now.
        assert!(
            c.get(&1, |_| false, |_| ()).is_none(),
            "old: refused, dropped"
        );
        assert_eq!((c.len(), drops.get()), (2, 1));
    }

    #[test]
    fn insert_replaces_and_clear_drops_everything() {
        let drops = Rc::new(Cell::new(0));
        let mut c = TwoGenerationCache::new(8);
        c.insert("a", Counted(1, Rc::clone(&drops)));
        c.insert("a", Counted(2, Rc::clone(&drops)));
        assert_eq!(c.get("a", any, |v| v.0), Some(2));
        assert_eq!((c.len(), drops.get()), (1, 1));
        c.insert("b", Counted(3, Rc::clone(&drops)));
        c.clear();
        assert!(c.is_empty());
        assert_eq!(drops.get(), 3);
    }
}
