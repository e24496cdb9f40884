//! Minimal edits to a TOML configuration file, through `toml_edit`'s document.
//!
//! `toml_edit` keeps every comment, blank line and formatting choice of what it
//! parsed; only the keys, tables and array entries that differ between the boot
//! and the running configuration are touched here. New entries are rendered
//! like `write::to_toml` does. Shapes this editor does not know (a service given
//! as an inline table, a key of an unexpected type) return `None`, and the
//! caller falls back to a full rendering.

use std::path::Path;
use std::time::Duration;

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::super::model::*;
use super::super::options::Written;
use super::super::write::{
    logging_values, seconds, to_toml, toml_agent, toml_check, toml_inline_options, toml_listen,
    toml_listeners, toml_route, toml_tls_array, toml_tls_entries, tstr, yes,
};
use super::{common_ends, first_index, written_path};

/// The running configuration written into `text`, which loaded into `boot`.
/// The caller has already ruled out a change of the cluster or the resolver.
pub(super) fn edit(
    text: &str,
    base_dir: Option<&Path>,
    boot: &Config,
    running: &Config,
) -> Option<String> {
    let mut doc: DocumentMut = text.parse().ok()?;
    let root = doc.as_table_mut();
    services(root, &boot.services, &running.services)?;
    admin(root, boot.admin.as_ref(), running.admin.as_ref(), base_dir)?;
    manager(root, &boot.manager, &running.manager)?;
    logging(root, &boot.logging, &running.logging, base_dir)?;
    path_leaf(
        root,
        "control",
        "socket",
        boot.control.as_ref().map(|c| c.socket.as_path()),
        running.control.as_ref().map(|c| c.socket.as_path()),
        base_dir,
    )?;
    Some(doc.to_string())
}

/// A new entry for a [`Seq`], in whichever form it comes.
enum Entry {
    Table(Table),
    Inline(InlineTable),
}

/// A list of table-like entries: `[[x]]` tables or an array of inline tables.
enum Seq<'a> {
    Tables(&'a mut ArrayOfTables),
    Values(&'a mut Array),
}

impl<'a> Seq<'a> {
    fn of(item: &'a mut Item) -> Option<Seq<'a>> {
        match item {
            Item::ArrayOfTables(a) => Some(Seq::Tables(a)),
            Item::Value(Value::Array(a)) => Some(Seq::Values(a)),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            Seq::Tables(a) => a.len(),
            Seq::Values(a) => a.len(),
        }
    }

    fn entry(&mut self, i: usize) -> Option<&mut dyn TableLike> {
        match self {
            Seq::Tables(a) => a.get_mut(i).map(|t| t as &mut dyn TableLike),
            Seq::Values(a) => a
                .get_mut(i)
                .and_then(Value::as_inline_table_mut)
                .map(|t| t as &mut dyn TableLike),
        }
    }

    fn remove(&mut self, i: usize) {
        if i >= self.len() {
            return;
        }
        match self {
            Seq::Tables(a) => {
                a.remove(i);
            }
            Seq::Values(a) => remove_value(a, i),
        }
    }

    /// Inserts an entry at `i` (appends when `i` is past the end).
    fn insert(&mut self, i: usize, entry: Entry) {
        match self {
            Seq::Tables(a) => {
                let t = match entry {
                    Entry::Table(t) => t,
                    Entry::Inline(t) => t.into_table(),
                };
                a.insert(i.min(a.len()), spaced(t));
            }
            Seq::Values(a) => {
                let v = match entry {
                    Entry::Table(t) => t.into_inline_table(),
                    Entry::Inline(t) => t,
                };
                insert_value(a, i, Value::InlineTable(v));
            }
        }
    }

    /// Brings the entries (one per `boot` item) to `running`: entries of items
    /// gone are removed, kept ones are handed to `keep`, new ones are inserted
    /// where `running` has them.
    /// Items are the same item when their `key`s are equal.
    fn sync<'i, T, K: Eq + std::hash::Hash>(
        &mut self,
        boot: &'i [T],
        running: &'i [T],
        key: impl Fn(&'i T) -> K,
        mut keep: impl FnMut(&mut dyn TableLike, &T, &T) -> Option<()>,
        make: impl Fn(&T) -> Option<Entry>,
    ) -> Option<()> {
        if self.len() != boot.len() {
            return None;
        }
        let running_at = first_index(running, &key);
        for (i, b) in boot.iter().enumerate().rev() {
            match running_at.get(&key(b)) {
                None => self.remove(i),
                Some(&r) => keep(self.entry(i)?, b, &running[r])?,
            }
        }
        // Kept entries are in running order (if not, the result fails its
        // check and the caller renders the whole file).
        let boot_at = first_index(boot, &key);
        for (i, r) in running.iter().enumerate() {
            if !boot_at.contains_key(&key(r)) {
                self.insert(i, make(r)?);
            }
        }
        Some(())
    }
}

/// A decor part as text (parsed documents own theirs).
fn raw(part: Option<&toml_edit::RawString>) -> String {
    part.and_then(|r| r.as_str()).unwrap_or("").to_string()
}

/// Splits whitespace between array elements at its first line break: what ends
/// the previous element's line (spaces, a comment) and the rest.
fn split_line(s: &str) -> (&str, &str) {
    s.split_at(s.find('\n').unwrap_or(s.len()))
}

/// A table to append after others: a blank line before its header.
fn spaced(mut t: Table) -> Table {
    if raw(t.decor().prefix()).is_empty() {
        t.decor_mut().set_prefix("\n");
    }
    t
}

/// Removes an array element with its line: in a multi-line array the comment
/// after an element sits in the next element's prefix (or the array's trailing
/// whitespace), so that is what goes, while the previous line's comment stays.
fn remove_value(a: &mut Array, i: usize) {
    let Some(removed) = a.get(i) else {
        return;
    };
    let prefix = raw(removed.decor().prefix());
    let suffix = raw(removed.decor().suffix());
    a.remove(i);
    let (keep, _) = split_line(&prefix);
    if let Some(next) = a.get_mut(i) {
        let next_prefix = raw(next.decor().prefix());
        let (_, rest) = split_line(&next_prefix);
        next.decor_mut().set_prefix(format!("{keep}{rest}"));
    } else if a.trailing_comma() {
        let trailing = raw(Some(a.trailing()));
        let (_, rest) = split_line(&trailing);
        a.set_trailing(format!("{keep}{rest}"));
    } else if let Some(last) = i.checked_sub(1).and_then(|j| a.get_mut(j)) {
        // `[a, b ]`: what closed the array after b now follows a.
        last.decor_mut().set_suffix(suffix);
    }
}

/// Appends an element formatted like its predecessors: one per line, with the
/// last one's indentation, in a multi-line array; `, x` in a one-line array. A
/// comment ending the last element's line stays on that line.
fn push_value(a: &mut Array, mut v: Value) {
    let Some(last) = a.iter().last() else {
        a.push_formatted(v);
        return;
    };
    let last_prefix = raw(last.decor().prefix());
    let Some(newline) = last_prefix.rfind('\n') else {
        // `[ "a" ]` → `[ "a", "b" ]`: what followed the last one follows the new one.
        let last_suffix = raw(last.decor().suffix());
        v.decor_mut().set_prefix(" ");
        v.decor_mut().set_suffix(last_suffix);
        if let Some(last) = a.iter_mut().last() {
            last.decor_mut().set_suffix("");
        }
        a.push_formatted(v);
        return;
    };
    let indent = last_prefix[newline + 1..].to_string();
    let line_end = |rest: &str| -> String {
        // Spaces alone before the line break are dropped; a comment is kept.
        if rest.contains('#') {
            rest.to_string()
        } else {
            String::new()
        }
    };
    if a.trailing_comma() {
        let trailing = raw(Some(a.trailing()));
        let (end, rest) = split_line(&trailing);
        v.decor_mut()
            .set_prefix(format!("{}\n{indent}", line_end(end)));
        v.decor_mut().set_suffix("");
        a.set_trailing(rest.to_string());
    } else {
        let last_suffix = raw(last.decor().suffix());
        let (end, rest) = split_line(&last_suffix);
        v.decor_mut()
            .set_prefix(format!("{}\n{indent}", line_end(end)));
        v.decor_mut().set_suffix(rest.to_string());
        if let Some(last) = a.iter_mut().last() {
            last.decor_mut().set_suffix("");
        }
    }
    a.push_formatted(v);
}

/// Inserts an element before the one at `i`, which keeps its line and the
/// comment lines above it; the comment ending the previous line stays there.
fn insert_value(a: &mut Array, i: usize, mut v: Value) {
    let Some(next) = a.get_mut(i) else {
        push_value(a, v);
        return;
    };
    let prefix = raw(next.decor().prefix());
    let (own, new) = match prefix.rfind('\n') {
        Some(newline) => {
            let (end, rest) = split_line(&prefix);
            (
                rest.to_string(),
                format!("{end}\n{}", &prefix[newline + 1..]),
            )
        }
        None if i == 0 => (" ".to_string(), prefix.clone()),
        None => (prefix.clone(), prefix.clone()),
    };
    next.decor_mut().set_prefix(own);
    v.decor_mut().set_prefix(new);
    v.decor_mut().set_suffix("");
    a.insert_formatted(i, v);
}

/// Sets `key` to `v`, keeping the old value's surrounding whitespace and comment.
fn set(t: &mut dyn TableLike, key: &str, mut v: Value) {
    match t.get_mut(key) {
        Some(Item::Value(old)) => {
            *v.decor_mut() = old.decor().clone();
            *old = v;
        }
        Some(other) => *other = Item::Value(v),
        None => {
            t.insert(key, Item::Value(v));
        }
    }
}

/// Writes changed options as keys; a setting back at its default is removed.
fn set_options(t: &mut dyn TableLike, changed: &[Written]) -> Option<()> {
    for o in changed {
        if o.default {
            t.remove(o.toml_key);
        } else {
            set(t, o.toml_key, o.toml.parse().ok()?);
        }
    }
    Some(())
}

fn secs(d: Duration) -> Option<Value> {
    seconds(d).parse().ok()
}

fn inline(text: &str) -> Option<InlineTable> {
    match text.parse::<Value>().ok()? {
        Value::InlineTable(t) => Some(t),
        _ => None,
    }
}

/// Tables parsed from a rendering keep that rendering's document positions;
/// without them they are written after their predecessor in the target.
fn unplace(item: &mut Item) {
    match item {
        Item::Table(t) => unplace_table(t),
        Item::ArrayOfTables(a) => a.iter_mut().for_each(unplace_table),
        _ => {}
    }
}

fn unplace_table(t: &mut Table) {
    t.set_position(None);
    for (_, item) in t.iter_mut() {
        unplace(item);
    }
}

/// A configuration holding only the given parts, rendered and parsed, to take
/// new tables from in `to_toml`'s style.
fn rendering(
    services: Vec<ServiceConfig>,
    admin: Option<AdminConfig>,
    manager: ManagerConfig,
) -> Option<DocumentMut> {
    to_toml(&Config {
        source: None,
        services,
        admin,
        manager,
        logging: LoggingConfig::default(),
        control: None,
        cluster: None,
        resolver: Default::default(),
        acme: None,
    })
    .parse()
    .ok()
}

fn take_first(item: Item) -> Option<Table> {
    let mut tables = item.into_array_of_tables().ok()?;
    if tables.is_empty() {
        return None;
    }
    let mut table = tables.remove(0);
    unplace_table(&mut table);
    Some(table)
}

fn rendered_service(s: &ServiceConfig) -> Option<Table> {
    let mut doc = rendering(vec![s.clone()], None, ManagerConfig::default())?;
    take_first(doc.as_table_mut().remove("service")?)
}

fn rendered_group(g: &GroupConfig, enabled: bool) -> Option<Table> {
    let service = ServiceConfig {
        name: "s".into(),
        listeners: Vec::new(),
        groups: vec![g.clone()],
        enabled_group: if enabled {
            g.name.clone()
        } else {
            String::new()
        },
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        options: Default::default(),
    };
    let mut service = rendered_service(&service)?;
    take_first(service.remove("group")?)
}

fn inline_host(h: &HostConfig) -> Option<InlineTable> {
    inline(&format!(
        "{{ name = {}, ip = {}, weight = {}{} }}",
        tstr(&h.name),
        tstr(&h.address.to_string()),
        h.weight,
        toml_inline_options(&h.options.non_default())
    ))
}

fn inline_user(u: &UserConfig) -> Option<InlineTable> {
    inline(&format!(
        "{{ name = {}, password = {}, access = {} }}",
        tstr(&u.name),
        tstr(&u.password_hash),
        tstr(u.access.name())
    ))
}

fn services(root: &mut Table, boot: &[ServiceConfig], running: &[ServiceConfig]) -> Option<()> {
    if boot == running {
        return Some(());
    }
    Seq::of(root.get_mut("service")?)?.sync(
        boot,
        running,
        |x| x.name.as_str(),
        service,
        |r| rendered_service(r).map(Entry::Table),
    )
}

fn service(t: &mut dyn TableLike, b: &ServiceConfig, r: &ServiceConfig) -> Option<()> {
    if b == r {
        return Some(());
    }
    if b.connect_timeout != r.connect_timeout {
        set(t, "connect_timeout", secs(r.connect_timeout)?);
    }
    set_options(t, &r.options.differing(&b.options))?;
    if b.listeners != r.listeners {
        listeners(t, b, r)?;
    }
    let named = match t.get("enabled_group") {
        None => false,
        Some(item) => {
            if item.as_str()? != r.enabled_group {
                set(t, "enabled_group", Value::from(r.enabled_group.as_str()));
            }
            true
        }
    };
    if t.get("group").is_none() && b.groups.is_empty() {
        if r.groups.is_empty() {
            return Some(());
        }
        // A service that had no group: the groups as `to_toml` writes them.
        let mut list = ArrayOfTables::new();
        for g in &r.groups {
            list.push(spaced(rendered_group(g, g.name == r.enabled_group)?));
        }
        t.insert("group", Item::ArrayOfTables(list));
        return Some(());
    }
    Seq::of(t.get_mut("group")?)?.sync(
        &b.groups,
        &r.groups,
        |x| x.name.as_str(),
        |t, bg, rg| group(t, bg, rg, rg.name == r.enabled_group, named),
        |g| rendered_group(g, g.name == r.enabled_group).map(Entry::Table),
    )
}

/// Edits the service's listeners: the `listen` array (entries matched by
/// address; one whose settings or routes changed becomes, or stays, a
/// table, and the others keep their text), or its `[[service.listen]]`
/// tables, or a new `listen` key where the service had none.
fn listeners(t: &mut dyn TableLike, b: &ServiceConfig, r: &ServiceConfig) -> Option<()> {
    let item = match t.get_mut("listen") {
        Some(item) => item,
        None if b.listeners.is_empty() => {
            set(t, "listen", toml_listeners(&r.listeners).parse().ok()?);
            return Some(());
        }
        None => return None,
    };
    if let Item::ArrayOfTables(_) = item {
        return Seq::of(item)?.sync(
            &b.listeners,
            &r.listeners,
            |x| &x.addr,
            listener,
            |l| inline(&toml_listen(l, "")).map(Entry::Inline),
        );
    }
    let listen = item.as_array_mut()?;
    if listen.len() != b.listeners.len() {
        return None;
    }
    let find = |list: &[Listener], l: &Listener| list.iter().position(|o| o.addr == l.addr);
    for (i, l) in b.listeners.iter().enumerate().rev() {
        match find(&r.listeners, l) {
            None => remove_value(listen, i),
            Some(j) if r.listeners[j] != *l => {
                let rl = &r.listeners[j];
                let entry = listen.get_mut(i)?;
                let plain =
                    rl.routes.is_empty() && rl.tls.is_none() && rl.options.non_default().is_empty();
                match entry {
                    Value::InlineTable(table) if !plain => {
                        listener(table, l, rl)?;
                        tidy_inline(table);
                    }
                    // Back to the address alone, or a table in place of it.
                    _ => {
                        let mut table: Value = toml_listen(rl, "  ").parse().ok()?;
                        *table.decor_mut() = entry.decor().clone();
                        *entry = table;
                    }
                }
            }
            Some(_) => {}
        }
    }
    for (i, l) in r.listeners.iter().enumerate() {
        if find(&b.listeners, l).is_none() {
            insert_value(listen, i, toml_listen(l, "  ").parse().ok()?);
        }
    }
    Some(())
}

/// After keys were added to an inline table: the blank before its `}` follows
/// its last value only (a key added after the last one would otherwise leave
/// `a = 1 , b = 2`). Comments and line breaks are left alone.
fn tidy_inline(t: &mut InlineTable) {
    let last = t.len().saturating_sub(1);
    for (i, (_, v)) in t.iter_mut().enumerate() {
        let suffix = raw(v.decor().suffix());
        if suffix.chars().all(|c| c == ' ' || c == '\t') {
            v.decor_mut().set_suffix(if i == last { " " } else { "" });
        }
    }
}

/// A listener's table (inline or `[[service.listen]]`): its settings and
/// routes.
fn listener(t: &mut dyn TableLike, b: &Listener, r: &Listener) -> Option<()> {
    set_options(t, &r.options.differing(&b.options))?;
    tls(t, b.tls.as_ref(), r.tls.as_ref())?;
    routes(t, &b.routes, &r.routes)
}

/// Brings a listener's `tls` to `running`: entries whose text is unchanged
/// keep it (and their comments), the others are replaced.
fn tls(
    t: &mut dyn TableLike,
    boot: Option<&ListenerTls>,
    running: Option<&ListenerTls>,
) -> Option<()> {
    if boot == running {
        return Some(());
    }
    let Some(running) = running else {
        t.remove("tls");
        return Some(());
    };
    let entries: Vec<String> = toml_tls_entries(running);
    let Some(item) = t.get_mut("tls") else {
        if boot.is_some() {
            return None;
        }
        set(t, "tls", toml_tls_array(running, "").parse().ok()?);
        return Some(());
    };
    let mut seq = Seq::of(item)?;
    let before = boot.map_or(0, ListenerTls::entries);
    if seq.len() != before {
        return None;
    }
    let old: Vec<String> = boot.map_or_else(Vec::new, toml_tls_entries);
    for i in (0..before).rev() {
        if entries.get(i) != old.get(i) {
            seq.remove(i);
        }
    }
    for (i, entry) in entries.iter().enumerate() {
        if old.get(i) != Some(entry) {
            seq.insert(i, Entry::Inline(inline(entry)?));
        }
    }
    Some(())
}

/// Brings a listener's `routes` to `running`. Routes have no name to match
/// them by and their order matters, so the routes both share at the start and
/// at the end keep their entries (and comments), and those in between are
/// replaced.
fn routes(t: &mut dyn TableLike, boot: &[Route], running: &[Route]) -> Option<()> {
    if boot == running {
        return Some(());
    }
    if running.is_empty() {
        t.remove("routes");
        return Some(());
    }
    let Some(item) = t.get_mut("routes") else {
        if !boot.is_empty() {
            return None;
        }
        let lines: String = running
            .iter()
            .map(|r| format!("\n    {},", toml_route(r)))
            .collect();
        set(t, "routes", format!("[{lines}\n  ]").parse().ok()?);
        return Some(());
    };
    let mut seq = Seq::of(item)?;
    if seq.len() != boot.len() {
        return None;
    }
    let (prefix, suffix) = common_ends(boot, running);
    for i in (prefix..boot.len() - suffix).rev() {
        seq.remove(i);
    }
    for (i, r) in running[prefix..running.len() - suffix].iter().enumerate() {
        seq.insert(prefix + i, Entry::Inline(inline(&toml_route(r))?));
    }
    Some(())
}

/// `enabled`: whether the running configuration enables this group; `named`:
/// whether the service names its enabled group with `enabled_group`.
fn group(
    t: &mut dyn TableLike,
    b: &GroupConfig,
    r: &GroupConfig,
    enabled: bool,
    named: bool,
) -> Option<()> {
    if b.scheduler != r.scheduler {
        set(t, "scheduler", Value::from(r.scheduler.name()));
    }
    set_options(t, &r.options.differing(&b.options))?;
    match t.get("enable").map(|e| e.as_bool()) {
        Some(None) => return None,
        Some(Some(flag)) if flag != enabled => set(t, "enable", Value::from(enabled)),
        Some(Some(_)) => {}
        None if enabled && !named => set(t, "enable", Value::from(true)),
        None => {}
    }
    check(t, b.check.as_ref(), r.check.as_ref())?;
    agent(t, b.agent.as_ref(), r.agent.as_ref())?;
    if b.hosts == r.hosts {
        return Some(());
    }
    if b.hosts.is_empty() {
        // Nothing to keep: the whole list, one host per line as `to_toml` writes it.
        let hosts: Vec<String> = r
            .hosts
            .iter()
            .map(|h| Some(format!("\n    {},", inline_host(h)?)))
            .collect::<Option<_>>()?;
        let array: Value = format!("[{}\n  ]", hosts.concat()).parse().ok()?;
        set(t, "hosts", array);
        return Some(());
    }
    let (boot, running): (Vec<_>, Vec<_>) = (b.hosts.iter().collect(), r.hosts.iter().collect());
    Seq::of(t.get_mut("hosts")?)?.sync(
        &boot,
        &running,
        |x| x.name.as_str(),
        |e, bh, rh| {
            if rh.address != bh.address {
                set(e, "ip", Value::from(rh.address.to_string()));
            }
            if rh.weight != bh.weight {
                set(e, "weight", Value::from(i64::from(rh.weight)));
            }
            set_options(e, &rh.options.differing(&bh.options))?;
            Some(())
        },
        |h| inline_host(h).map(Entry::Inline),
    )
}

/// A group's `check` table: keys edited in place, or the table added or
/// removed.
fn check(t: &mut dyn TableLike, b: Option<&CheckConfig>, r: Option<&CheckConfig>) -> Option<()> {
    if b == r {
        return Some(());
    }
    let Some(r) = r else {
        t.remove("check");
        return Some(());
    };
    match t.get_mut("check") {
        Some(item) => {
            let table = item.as_table_like_mut()?;
            let base = b.cloned().unwrap_or_default();
            for mut o in r.differing(&base) {
                // The type stays written even at its default.
                o.default &= o.toml_key != "type";
                set_options(table, &[o])?;
            }
        }
        None => set(t, "check", Value::InlineTable(inline(&toml_check(r))?)),
    }
    Some(())
}

/// A group's `agent` table: keys edited in place, or the table added or
/// removed.
fn agent(t: &mut dyn TableLike, b: Option<&AgentConfig>, r: Option<&AgentConfig>) -> Option<()> {
    if b == r {
        return Some(());
    }
    let Some(r) = r else {
        t.remove("agent");
        return Some(());
    };
    match t.get_mut("agent") {
        Some(item) => {
            let table = item.as_table_like_mut()?;
            let base = b.cloned().unwrap_or_default();
            set_options(table, &r.differing(&base))?;
        }
        None => set(t, "agent", Value::InlineTable(inline(&toml_agent(r))?)),
    }
    Some(())
}

/// Inserts a sub-table: `[parent.key]` under a table, an inline table under an
/// inline one.
fn insert_sub(parent: &mut Item, key: &str, sub: InlineTable) -> Option<()> {
    match parent {
        Item::Table(t) => {
            t.insert(key, Item::Table(sub.into_table()));
        }
        Item::Value(Value::InlineTable(t)) => {
            t.insert(key, Value::InlineTable(sub));
        }
        _ => return None,
    }
    Some(())
}

fn admin(
    root: &mut Table,
    b: Option<&AdminConfig>,
    r: Option<&AdminConfig>,
    base_dir: Option<&Path>,
) -> Option<()> {
    if b == r {
        return Some(());
    }
    let (b, r) = match (b, r) {
        (_, None) => {
            root.remove("admin");
            return Some(());
        }
        (None, Some(r)) => {
            let mut doc = rendering(Vec::new(), Some(r.clone()), ManagerConfig::default())?;
            let mut item = doc.as_table_mut().remove("admin")?;
            unplace(&mut item);
            root.insert("admin", item);
            return Some(());
        }
        (Some(b), Some(r)) => (b, r),
    };
    let a = root.get_mut("admin")?;
    if b.web != r.web {
        match (&b.web, &r.web) {
            (_, None) => {
                a.as_table_like_mut()?.remove("web");
            }
            (Some(bw), Some(rw)) => {
                let w = a.as_table_like_mut()?.get_mut("web")?.as_table_like_mut()?;
                if bw.listen != rw.listen {
                    set(w, "listen", Value::from(rw.listen.to_string()));
                }
                if bw.enable != rw.enable {
                    set(w, "enable", Value::from(rw.enable));
                }
                if bw.secure != rw.secure {
                    set(w, "secure", Value::from(rw.secure));
                }
                if bw.refresh != rw.refresh {
                    set(w, "refresh", secs(rw.refresh)?);
                }
            }
            (None, Some(rw)) => {
                let web = inline(&format!(
                    "{{ listen = {}, enable = {}, secure = {}, refresh = {} }}",
                    tstr(&rw.listen.to_string()),
                    yes(rw.enable),
                    yes(rw.secure),
                    seconds(rw.refresh)
                ))?;
                insert_sub(a, "web", web)?;
            }
        }
    }
    if b.ssh != r.ssh {
        match (&b.ssh, &r.ssh) {
            (_, None) => {
                a.as_table_like_mut()?.remove("ssh");
            }
            (Some(bs), Some(rs)) => {
                let s = a.as_table_like_mut()?.get_mut("ssh")?.as_table_like_mut()?;
                if bs.listen != rs.listen {
                    set(s, "listen", Value::from(rs.listen.to_string()));
                }
                if bs.enable != rs.enable {
                    set(s, "enable", Value::from(rs.enable));
                }
                for (key, bp, rp) in [
                    ("authorized_keys", &bs.authorized_keys, &rs.authorized_keys),
                    ("host_key", &bs.host_key, &rs.host_key),
                ] {
                    if bp != rp {
                        match rp {
                            Some(p) => set(s, key, Value::from(written_path(p, base_dir))),
                            None => {
                                s.remove(key);
                            }
                        }
                    }
                }
            }
            (None, Some(rs)) => {
                let mut extra = String::new();
                for (key, path) in [
                    ("authorized_keys", &rs.authorized_keys),
                    ("host_key", &rs.host_key),
                ] {
                    if let Some(p) = path {
                        extra.push_str(&format!(", {key} = {}", tstr(&written_path(p, base_dir))));
                    }
                }
                let ssh = inline(&format!(
                    "{{ listen = {}, enable = {}{extra} }}",
                    tstr(&rs.listen.to_string()),
                    yes(rs.enable)
                ))?;
                insert_sub(a, "ssh", ssh)?;
            }
        }
    }
    if b.users != r.users {
        users(a, &b.users, &r.users)?;
    }
    Some(())
}

fn users(admin: &mut Item, b: &[UserConfig], r: &[UserConfig]) -> Option<()> {
    let has_list = admin.as_table_like_mut()?.contains_key("user");
    if !has_list {
        if !b.is_empty() {
            return None;
        }
        let Item::Table(t) = admin else {
            return None;
        };
        let mut list = ArrayOfTables::new();
        for u in r {
            list.push(inline_user(u)?.into_table());
        }
        t.insert("user", Item::ArrayOfTables(list));
        return Some(());
    }
    Seq::of(admin.as_table_like_mut()?.get_mut("user")?)?.sync(
        b,
        r,
        |x| x.name.as_str(),
        |e, bu, ru| {
            if ru.password_hash != bu.password_hash {
                set(e, "password", Value::from(ru.password_hash.as_str()));
            }
            if ru.access != bu.access {
                set(e, "access", Value::from(ru.access.name()));
            }
            Some(())
        },
        |u| inline_user(u).map(Entry::Inline),
    )
}

fn manager(root: &mut Table, b: &ManagerConfig, r: &ManagerConfig) -> Option<()> {
    if b == r {
        return Some(());
    }
    let Some(m) = root.get_mut("manager") else {
        let mut doc = rendering(Vec::new(), None, *r)?;
        let mut item = doc.as_table_mut().remove("manager")?;
        unplace(&mut item);
        root.insert("manager", item);
        return Some(());
    };
    let m = m.as_table_like_mut()?;
    for (key, bt, rt) in [
        ("host_check", b.host_check, r.host_check),
        ("config_check", b.config_check, r.config_check),
        ("heartbeat", b.heartbeat, r.heartbeat),
    ] {
        if bt == rt {
            continue;
        }
        match m.get_mut(key) {
            Some(item) => {
                let task = item.as_table_like_mut()?;
                if bt.interval != rt.interval {
                    set(task, "interval", secs(rt.interval)?);
                }
                if bt.enable != rt.enable {
                    set(task, "enable", Value::from(rt.enable));
                }
            }
            None => {
                let task = inline(&format!(
                    "{{ interval = {}, enable = {} }}",
                    seconds(rt.interval),
                    yes(rt.enable)
                ))?;
                m.insert(key, Item::Value(Value::InlineTable(task)));
            }
        }
    }
    Some(())
}

/// `[logging] file` and `[control] socket`: one path key each.
/// `[logging]`: changed keys set in place, removed ones removed.
fn logging(
    root: &mut Table,
    b: &LoggingConfig,
    r: &LoggingConfig,
    base_dir: Option<&Path>,
) -> Option<()> {
    if b == r {
        return Some(());
    }
    if r.is_empty() {
        root.remove("logging");
        return Some(());
    }
    if root.get("logging").is_none() {
        root.insert("logging", Item::Table(Table::new()));
    }
    let t = root.get_mut("logging")?.as_table_like_mut()?;
    let values = logging_values(r);
    for key in ["file", "access", "format"] {
        match values.iter().find(|(k, _)| *k == key) {
            Some((_, v)) if key == "format" => set(t, key, Value::from(v.as_str())),
            Some((_, v)) => set(t, key, Value::from(written_path(Path::new(v), base_dir))),
            None => {
                t.remove(key);
            }
        }
    }
    Some(())
}

fn path_leaf(
    root: &mut Table,
    table: &str,
    key: &str,
    b: Option<&Path>,
    r: Option<&Path>,
    base_dir: Option<&Path>,
) -> Option<()> {
    if b == r {
        return Some(());
    }
    let Some(path) = r else {
        root.remove(table);
        return Some(());
    };
    let written = Value::from(written_path(path, base_dir));
    match root.get_mut(table) {
        Some(item) => set(item.as_table_like_mut()?, key, written),
        None => {
            let mut t = Table::new();
            t.insert(key, Item::Value(written));
            root.insert(table, Item::Table(t));
        }
    }
    Some(())
}
