//! A group's hosts: a persistent list shared between copies of a configuration.

use std::fmt;

use imbl::shared_ptr::DefaultSharedPtr;

use super::HostConfig;

/// The hosts of a group, in file order, shared between copies of a
/// configuration: copying a configuration copies no host, and a change to a
/// copy (one host added, removed or edited) copies only the few chunks it
/// touches, whatever the group's size. A count of each name is kept beside
/// them, so an added host's name is checked against the group's without a
/// scan.
#[derive(Clone, Default)]
pub struct HostList {
    hosts: imbl::Vector<HostConfig>,
    names: imbl::HashMap<String, u32>,
}

impl HostList {
    /// An empty list.
    pub fn new() -> HostList {
        HostList::default()
    }

    /// How many hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there is no host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The host at `index`, if any.
    pub fn get(&self, index: usize) -> Option<&HostConfig> {
        self.hosts.get(index)
    }

    /// The hosts in order.
    pub fn iter(&self) -> imbl::vector::Iter<'_, HostConfig, DefaultSharedPtr> {
        self.hosts.iter()
    }

    /// Whether a host is called `name`, without a scan.
    pub fn contains_name(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// The index of the host called `name`, if any (a scan, stopping early
    /// when no host has that name).
    pub fn position(&self, name: &str) -> Option<usize> {
        if !self.contains_name(name) {
            return None;
        }
        self.hosts.iter().position(|h| h.name == name)
    }

    /// Whether both are the same list (not only equal): nothing was written
    /// through either since one was copied from the other.
    pub fn is_shared_with(&self, other: &HostList) -> bool {
        self.hosts.ptr_eq(&other.hosts)
    }

    /// Adds `host` at the end.
    pub fn push(&mut self, host: HostConfig) {
        self.count(&host.name);
        self.hosts.push_back(host);
    }

    /// Adds `host` at `index`, moving the hosts after it.
    ///
    /// # Panics
    /// When `index > len()`, as `Vec::insert`.
    pub fn insert(&mut self, index: usize, host: HostConfig) {
        self.count(&host.name);
        self.hosts.insert(index, host);
    }

    /// Removes and returns the host at `index`.
    ///
    /// # Panics
    /// When `index >= len()`, as `Vec::remove`.
    pub fn remove(&mut self, index: usize) -> HostConfig {
        let host = self.hosts.remove(index);
        self.uncount(&host.name);
        host
    }

    /// Keeps only the hosts `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&HostConfig) -> bool) {
        let kept: HostList = self.hosts.iter().filter(|h| keep(h)).cloned().collect();
        *self = kept;
    }

    /// Removes every host.
    pub fn clear(&mut self) {
        *self = HostList::new();
    }

    /// The host at `index`, to change in place (its name too: the count of
    /// names follows when the edit ends).
    ///
    /// # Panics
    /// When `index >= len()`.
    pub fn edit(&mut self, index: usize) -> HostEdit<'_> {
        let named = self.hosts[index].name.clone();
        HostEdit {
            list: self,
            index,
            named,
        }
    }

    fn count(&mut self, name: &str) {
        *self.names.entry(name.to_string()).or_insert(0) += 1;
    }

    fn uncount(&mut self, name: &str) {
        if let Some(n) = self.names.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.names.remove(name);
            }
        }
    }
}

/// One host of a [`HostList`] being changed in place (see [`HostList::edit`]).
// Its fields are named so that none hides a field of `HostConfig` (a
// `name` here would take `edit(i).name = …` for itself).
pub struct HostEdit<'a> {
    list: &'a mut HostList,
    index: usize,
    named: String,
}

impl std::ops::Deref for HostEdit<'_> {
    type Target = HostConfig;

    fn deref(&self) -> &HostConfig {
        &self.list.hosts[self.index]
    }
}

impl std::ops::DerefMut for HostEdit<'_> {
    fn deref_mut(&mut self) -> &mut HostConfig {
        &mut self.list.hosts[self.index]
    }
}

impl Drop for HostEdit<'_> {
    fn drop(&mut self) {
        let now = self.list.hosts[self.index].name.clone();
        if now != self.named {
            self.list.uncount(&self.named);
            self.list.count(&now);
        }
    }
}

impl std::ops::Index<usize> for HostList {
    type Output = HostConfig;

    fn index(&self, index: usize) -> &HostConfig {
        &self.hosts[index]
    }
}

impl From<Vec<HostConfig>> for HostList {
    fn from(hosts: Vec<HostConfig>) -> Self {
        hosts.into_iter().collect()
    }
}

impl FromIterator<HostConfig> for HostList {
    fn from_iter<I: IntoIterator<Item = HostConfig>>(hosts: I) -> Self {
        let mut list = HostList::new();
        for host in hosts {
            list.push(host);
        }
        list
    }
}

impl Extend<HostConfig> for HostList {
    fn extend<I: IntoIterator<Item = HostConfig>>(&mut self, hosts: I) {
        for host in hosts {
            self.push(host);
        }
    }
}

impl<'a> IntoIterator for &'a HostList {
    type Item = &'a HostConfig;
    type IntoIter = imbl::vector::Iter<'a, HostConfig, DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.hosts.iter()
    }
}

impl IntoIterator for HostList {
    type Item = HostConfig;
    type IntoIter = imbl::vector::ConsumingIter<HostConfig, DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.hosts.into_iter()
    }
}

impl fmt::Debug for HostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.hosts.iter()).finish()
    }
}

/// Equal hosts in the same order; a list shared with `other` is equal at once.
impl PartialEq for HostList {
    fn eq(&self, other: &HostList) -> bool {
        self.is_shared_with(other) || self.hosts == other.hosts
    }
}

impl Eq for HostList {}

impl PartialEq<Vec<HostConfig>> for HostList {
    fn eq(&self, other: &Vec<HostConfig>) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostAddress;

    fn host(name: &str) -> HostConfig {
        HostConfig {
            name: name.into(),
            address: HostAddress {
                host: "127.0.0.1".into(),
                port: 1,
            },
            weight: 1,
            options: Default::default(),
        }
    }

    #[test]
    fn names_follow_every_change() {
        let mut list: HostList = vec![host("a"), host("b"), host("a")].into();
        assert!(list.contains_name("a") && list.contains_name("b"));
        list.remove(0);
        assert!(list.contains_name("a"), "one a is left");
        list.edit(1).name = "c".into();
        assert!(!list.contains_name("a") && list.contains_name("c"));
        assert_eq!(list.position("c"), Some(1));
        list.insert(0, host("d"));
        list.retain(|h| h.name != "b");
        assert_eq!(
            list.iter().map(|h| &*h.name).collect::<Vec<_>>(),
            ["d", "c"]
        );
        assert!(!list.contains_name("b") && list.contains_name("d"));
        list.clear();
        assert!(list.is_empty() && !list.contains_name("d"));
    }

    #[test]
    fn a_copy_shares_until_written_and_writing_leaves_the_original() {
        let list: HostList = (0..1000).map(|i| host(&format!("h{i}"))).collect();
        let mut copy = list.clone();
        assert!(copy.is_shared_with(&list) && copy == list);
        copy.push(host("new"));
        assert!(!copy.is_shared_with(&list));
        assert_eq!((list.len(), copy.len()), (1000, 1001));
        assert!(!list.contains_name("new") && copy.contains_name("new"));
    }
}
