//! The sessions of one UDP listener: records in a slab, found by client
//! address and port, or by key (slot and generation), which is how the
//! relay's epoll set and the QUIC connection IDs name a session. Owned by the
//! listener's relay thread alone: no lock.

use std::collections::HashMap;
use std::net::SocketAddr;

/// A record the table can index by its client.
pub(super) trait Client {
    /// The client's address and port.
    fn client(&self) -> SocketAddr;
}

/// A slot of the slab; `generation` tells a session from a later one in the
/// same slot (an event read in one batch with the end of the first).
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// The open sessions of a listener.
pub(super) struct Table<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    by_client: HashMap<SocketAddr, u32>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::new(),
        }
    }
}

/// A session's key: its slot's generation above its slot's index. Never
/// `u64::MAX` or `u64::MAX - 1` (the relay's own keys): an index is below
/// the descriptor limit.
pub(super) type Key = u64;

fn key(generation: u32, index: u32) -> Key {
    (u64::from(generation) << 32) | u64::from(index)
}

impl<T: Client> Table<T> {
    /// Sessions open.
    pub(super) fn len(&self) -> usize {
        self.by_client.len()
    }

    /// The key of `client`'s session.
    pub(super) fn find(&self, client: SocketAddr) -> Option<Key> {
        let index = *self.by_client.get(&client)?;
        Some(key(self.slots[index as usize].generation, index))
    }

    pub(super) fn get(&self, key: Key) -> Option<&T> {
        let slot = self.slots.get(key as u32 as usize)?;
        if u64::from(slot.generation) != key >> 32 {
            return None;
        }
        slot.value.as_ref()
    }

    pub(super) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let slot = self.slots.get_mut(key as u32 as usize)?;
        if u64::from(slot.generation) != key >> 32 {
            return None;
        }
        slot.value.as_mut()
    }

    /// Adds a session (its client has none open here); its key.
    pub(super) fn insert(&mut self, value: T) -> Key {
        let client = value.client();
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize].value = Some(value);
                index
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: Some(value),
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.by_client.insert(client, index);
        key(self.slots[index as usize].generation, index)
    }

    /// Takes the session under `key` out, if it is still open.
    pub(super) fn remove(&mut self, key: Key) -> Option<T> {
        let index = key as u32;
        let slot = self.slots.get_mut(index as usize)?;
        if u64::from(slot.generation) != key >> 32 {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.by_client.remove(&value.client());
        Some(value)
    }

    /// The keys of the sessions `pick` chooses.
    pub(super) fn keys_where(&self, mut pick: impl FnMut(&T) -> bool) -> Vec<Key> {
        self.slots
            .iter()
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
        let first = table.insert(S(addr(1)));
        assert_eq!(table.find(addr(1)), Some(first));
        assert!(table.remove(first).is_some());
        assert!(table.remove(first).is_none());
        let second = table.insert(S(addr(2)));
        assert_ne!(first, second, "same slot, new generation");
        assert!(table.get(first).is_none());
        assert_eq!(table.get(second).map(|s| s.0), Some(addr(2)));
        assert_eq!(table.find(addr(1)), None);
        assert_eq!(table.len(), 1);
        assert_eq!(table.keys_where(|_| true), vec![second]);
    }
}
