//! A group's hosts as the data path sees them: a persistent list.

use std::fmt;

use imbl::shared_ptr::DefaultSharedPtr;

use super::HostSnapshot;

/// The hosts of a group in a snapshot, in configuration order; schedulers
/// return indices into it. Persistent: the next snapshot shares it with the
/// running one, so a host added to a group of 100,000 copies a few chunks
/// rather than the group, and dropping the old snapshot frees only those.
/// Indexing is a few loads (one chunk for groups of up to 64 hosts).
#[derive(Clone, Default)]
pub struct Hosts(imbl::Vector<HostSnapshot>);

impl Hosts {
    /// How many hosts.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no host.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The host at `index`, if any.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&HostSnapshot> {
        self.0.get(index)
    }

    /// The hosts in order.
    pub fn iter(&self) -> imbl::vector::Iter<'_, HostSnapshot, DefaultSharedPtr> {
        self.0.iter()
    }

    /// Adds `host` at the end (a copy of the last chunk, not of the list).
    pub fn push(&mut self, host: HostSnapshot) {
        self.0.push_back(host);
    }
}

impl std::ops::Index<usize> for Hosts {
    type Output = HostSnapshot;

    #[inline]
    fn index(&self, index: usize) -> &HostSnapshot {
        &self.0[index]
    }
}

impl From<Vec<HostSnapshot>> for Hosts {
    fn from(hosts: Vec<HostSnapshot>) -> Self {
        Hosts(hosts.into_iter().collect())
    }
}

impl FromIterator<HostSnapshot> for Hosts {
    fn from_iter<I: IntoIterator<Item = HostSnapshot>>(hosts: I) -> Self {
        Hosts(hosts.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Hosts {
    type Item = &'a HostSnapshot;
    type IntoIter = imbl::vector::Iter<'a, HostSnapshot, DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for Hosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}
