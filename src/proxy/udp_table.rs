//! The sessions of one UDP listener: records in a slab, found by client
//! address and port, or by key (slot and generation), which is how the
//! relay's epoll set and the QUIC connection IDs name a session. Owned by the
//! listener's relay thread alone: no lock.
//!
//! Sized for memory per session (issue 26: at most 256 B beside the
//! kernel's): the slab grows by chunks (no reallocation leaving the old
//! copy behind), a free slot holds the next free one (no separate list), and
//! the index by client is a hash table of slot numbers, 4 bytes and a control
//! byte per bucket, the address itself read from the slot.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;

use hashbrown::HashTable;

/// A record the table can index by its client.
pub(super) trait Client {
    /// The client's address and port.
    fn client(&self) -> SocketAddr;
}

/// Slots per chunk of the slab: a chunk of 120-byte records stays under
/// the allocator's threshold for a mapping of its own.
const CHUNK: usize = 256;

/// No next free slot.
const NONE: u32 = u32::MAX;

/// A slot of the slab; `generation` tells a session from a later one in the
/// same slot (an event read in one batch with the end of the first).
struct Slot<T> {
    generation: u32,
    /// While empty, the next empty slot ([`NONE`]: the last).
    next_free: u32,
    value: Option<T>,
}

/// The open sessions of a listener.
pub(super) struct Table<T> {
    chunks: Vec<Vec<Slot<T>>>,
    /// The first empty slot below the slab's end ([`NONE`]: none).
    free: u32,
    /// Slots in use or freed (the slab's end).
    slots: u32,
    /// Slot numbers of the open sessions, hashed by client (keyed hashing:
    /// clients choose their addresses).
    by_client: HashTable<u32>,
    hasher: RandomState,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            chunks: Vec::new(),
            free: NONE,
            slots: 0,
            by_client: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

/// A session's key: its slot's generation above its slot's number. Never
/// `u64::MAX` or `u64::MAX - 1` (the relay's own keys): a slot number is
/// below the descriptor limit.
pub(super) type Key = u64;

fn key(generation: u32, index: u32) -> Key {
    (u64::from(generation) << 32) | u64::from(index)
}

fn slot<T>(chunks: &[Vec<Slot<T>>], index: u32) -> &Slot<T> {
    &chunks[index as usize / CHUNK][index as usize % CHUNK]
}

impl<T: Client> Table<T> {
    fn slot_mut(&mut self, index: u32) -> &mut Slot<T> {
        &mut self.chunks[index as usize / CHUNK][index as usize % CHUNK]
    }

    /// The slot under `key`, if it is still that session's.
    fn keyed(&self, key: Key) -> Option<&Slot<T>> {
        let index = key as u32;
        if index >= self.slots {
            return None;
        }
        let slot = slot(&self.chunks, index);
        (u64::from(slot.generation) == key >> 32).then_some(slot)
    }

    /// The key of `client`'s session.
    pub(super) fn find(&self, client: SocketAddr) -> Option<Key> {
        let hash = self.hasher.hash_one(client);
        let chunks = &self.chunks;
        let is_client = |&i: &u32| slot(chunks, i).value.as_ref().map(T::client) == Some(client);
        let index = *self.by_client.find(hash, is_client)?;
        Some(key(slot(chunks, index).generation, index))
    }

    pub(super) fn get(&self, key: Key) -> Option<&T> {
        self.keyed(key)?.value.as_ref()
    }

    pub(super) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.keyed(key)?;
        self.slot_mut(key as u32).value.as_mut()
    }

    /// Adds a session; its key, or the session back when its client has
    /// one open here already (one session per client address).
    pub(super) fn insert(&mut self, value: T) -> Result<Key, T> {
        let client = value.client();
        if self.find(client).is_some() {
            return Err(value);
        }
        let index = if self.free != NONE {
            let index = self.free;
            let slot = self.slot_mut(index);
            let next = slot.next_free;
            slot.value = Some(value);
            self.free = next;
            index
        } else {
            let index = self.slots;
            if (index as usize).is_multiple_of(CHUNK) {
                self.chunks.push(Vec::with_capacity(CHUNK));
            }
            let chunk = self.chunks.last_mut().expect("a chunk with room");
            chunk.push(Slot {
                generation: 0,
                next_free: NONE,
                value: Some(value),
            });
            self.slots += 1;
            index
        };
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        let rehash = |&i: &u32| {
            let client = slot(chunks, i).value.as_ref().map(T::client);
            hasher.hash_one(client.expect("indexed slots are in use"))
        };
        self.by_client
            .insert_unique(hasher.hash_one(client), index, rehash);
        Ok(key(slot(chunks, index).generation, index))
    }

    /// Takes the session under `key` out, if it is still open.
    pub(super) fn remove(&mut self, key: Key) -> Option<T> {
        self.keyed(key)?.value.as_ref()?;
        let index = key as u32;
        let free = self.free;
        let slot = self.slot_mut(index);
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.next_free = free;
        self.free = index;
        let hash = self.hasher.hash_one(value.client());
        if let Ok(entry) = self.by_client.find_entry(hash, |&i| i == index) {
            entry.remove();
        }
        Some(value)
    }

    /// Every open session, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks
            .iter()
            .flatten()
            .filter_map(|slot| slot.value.as_ref())
    }

    /// The keys of the sessions `pick` chooses.
    pub(super) fn keys_where(&self, mut pick: impl FnMut(&T) -> bool) -> Vec<Key> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(index, slot)| {
                let value = slot.value.as_ref()?;
                pick(value).then(|| key(slot.generation, index as u32))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(SocketAddr);
    impl Client for S {
        fn client(&self) -> SocketAddr {
            self.0
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_slot_reused_by_another_session_does_not_answer_to_the_old_key() {
        let mut table = Table::default();
        let first = table.insert(S(addr(1))).ok().unwrap();
        assert_eq!(table.find(addr(1)), Some(first));
        // One session per client address.
        assert!(table.insert(S(addr(1))).is_err());
        assert_eq!(table.by_client.len(), 1);
        assert!(table.remove(first).is_some());
        assert!(table.remove(first).is_none());
        let second = table.insert(S(addr(2))).ok().unwrap();
        assert_ne!(first, second, "same slot, new generation");
        assert_eq!(first as u32, second as u32);
        assert!(table.get(first).is_none());
        assert_eq!(table.get(second).map(|s| s.0), Some(addr(2)));
        assert_eq!(table.find(addr(1)), None);
        assert_eq!(table.by_client.len(), 1);
        assert_eq!(table.keys_where(|_| true), vec![second]);
        assert_eq!(table.iter().map(|s| s.0).collect::<Vec<_>>(), vec![addr(2)]);
    }

    #[test]
    fn sessions_across_chunks_are_found_and_freed_slots_reused_first() {
        let mut table = Table::default();
        let n = 3 * CHUNK as u16 + 7;
        let keys: Vec<Key> = (0..n)
            .map(|p| table.insert(S(addr(p))).ok().unwrap())
            .collect();
        for (p, key) in keys.iter().enumerate() {
            assert_eq!(table.find(addr(p as u16)), Some(*key));
        }
        // Every other one ends; new ones take their slots, the slab stays.
        for key in keys.iter().step_by(2) {
            assert!(table.remove(*key).is_some());
        }
        assert_eq!(table.by_client.len(), usize::from(n / 2));
        for p in 0..n.div_ceil(2) {
            let key = table.insert(S(addr(10_000 + p))).ok().unwrap();
            assert!((key as u32) < u32::from(n));
        }
        assert_eq!(table.slots, u32::from(n));
        assert_eq!(table.by_client.len(), usize::from(n));
        assert_eq!(table.find(addr(0)), None);
        assert_eq!(table.find(addr(1)), Some(keys[1]));
        assert_eq!(
            table.keys_where(|s| s.0.port() >= 10_000).len(),
            usize::from(n.div_ceil(2))
        );
    }
}
