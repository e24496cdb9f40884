//! Minimal edits to a txLoadBalancer XML file: only what changed is rewritten.
//!
//! The file is parsed again with byte spans (the reader's element tree), the
//! boot and running models are compared element by element, and each difference
//! becomes a text edit: an attribute value replaced in place, an element removed
//! with its line, a new element inserted after its last sibling with the
//! sibling's indentation. Everything else (comments, `<note>`s, blank lines,
//! attribute order and quoting) is copied through byte for byte. Anything this
//! editor cannot express returns `None` and the caller falls back to a full
//! rendering.

use std::path::Path;

use super::super::error::{STRING_SOURCE, Source};
use super::super::model::*;
use super::super::options::Written;
use super::super::parse::parse_bool;
use super::super::write::{
    attr as esc, logging_values, seconds, written_path, xml_admin, xml_agent, xml_check, xml_group,
    xml_host, xml_listen, xml_manager, xml_route, xml_service, xml_ssh, xml_task, xml_tls_entries,
    xml_user, xml_web, yes,
};
use super::super::xml::{Element, parse_tree};
use super::{common_ends, first_index};

/// The indentation step used when the file shows none.
const DEFAULT_STEP: &str = "  ";

/// Replace `start..end` of the original text with `with`.
#[derive(Debug)]
struct Edit {
    start: usize,
    end: usize,
    with: String,
}

/// The running configuration written into `text`, which loaded into `boot`.
/// `None` when a change cannot be expressed as local edits. The caller has
/// already ruled out a change of the cluster or the resolver.
pub(super) fn edit(
    text: &str,
    base_dir: Option<&Path>,
    boot: &Config,
    running: &Config,
) -> Option<String> {
    let root = parse_tree(&Source::new(STRING_SOURCE, text)).ok()?;
    let mut ed = Editor {
        text,
        step: detect_step(text, &root),
        base_dir,
        edits: Vec::new(),
        failed: false,
        crlf: text.contains("\r\n"),
    };
    ed.services(&root, &boot.services, &running.services)?;
    ed.admin(&root, boot.admin.as_ref(), running.admin.as_ref())?;
    ed.manager(&root, &boot.manager, &running.manager);
    ed.logging(&root, &boot.logging, &running.logging);
    ed.path_leaf(
        &root,
        "control",
        "socket",
        boot.control.as_ref().map(|c| c.socket.as_path()),
        running.control.as_ref().map(|c| c.socket.as_path()),
    );
    if ed.failed {
        return None;
    }
    apply(text, ed.edits)
}

/// Applies non-overlapping edits; `None` if two overlap.
fn apply(text: &str, mut edits: Vec<Edit>) -> Option<String> {
    // Stable: insertions at one point keep the order they were made in.
    edits.sort_by_key(|e| (e.start, e.end));
    let mut out = String::with_capacity(text.len() + 256);
    let mut pos = 0;
    for e in edits {
        if e.start < pos || e.end < e.start {
            return None;
        }
        out.push_str(text.get(pos..e.start)?);
        out.push_str(&e.with);
        pos = e.end;
    }
    out.push_str(text.get(pos..)?);
    Some(out)
}

/// The children of `el` named `name`, in file order.
fn kids<'e>(el: &'e Element, name: &str) -> Vec<&'e Element> {
    el.children.iter().filter(|c| c.name == name).collect()
}

fn attr_value<'e>(el: &'e Element, name: &str) -> Option<&'e str> {
    el.attrs
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_str())
}

fn line_start(text: &str, at: usize) -> usize {
    text.get(..at)
        .and_then(|before| before.rfind('\n'))
        .map_or(0, |i| i + 1)
}

fn is_blank(s: &str) -> bool {
    s.chars().all(|c| c == ' ' || c == '\t' || c == '\r')
}

/// The whitespace that starts the line `at` is on.
fn indent_at(text: &str, at: usize) -> &str {
    let start = line_start(text, at);
    let line = text.get(start..at).unwrap_or("");
    let len = line.len() - line.trim_start_matches([' ', '\t']).len();
    &line[..len]
}

/// The file's indentation step: the first child indented deeper than its parent,
/// both alone at the start of their lines.
fn detect_step(text: &str, root: &Element) -> String {
    fn starts_line(text: &str, el: &Element) -> bool {
        is_blank(text.get(line_start(text, el.at)..el.at).unwrap_or("x"))
    }
    let mut stack = vec![root];
    while let Some(el) = stack.pop() {
        if let Some(child) = el.children.first()
            && starts_line(text, el)
            && starts_line(text, child)
        {
            let outer = indent_at(text, el.at);
            let inner = indent_at(text, child.at);
            if let Some(step) = inner.strip_prefix(outer)
                && !step.is_empty()
            {
                return step.to_string();
            }
        }
        stack.extend(el.children.iter().rev());
    }
    DEFAULT_STEP.to_string()
}

struct Editor<'t> {
    text: &'t str,
    step: String,
    base_dir: Option<&'t Path>,
    edits: Vec<Edit>,
    /// Set when an edit could not be placed; the result is then refused.
    failed: bool,
    /// Whether the file's lines end in CR LF.
    crlf: bool,
}

impl Editor<'_> {
    fn push(&mut self, start: usize, end: usize, with: String) {
        // New lines end like the file's (renderings use '\n').
        let with = if self.crlf {
            with.replace('\n', "\r\n")
        } else {
            with
        };
        self.edits.push(Edit { start, end, with });
    }

    /// Removes an element, with its whole line when it is alone on it.
    fn remove(&mut self, el: &Element) {
        let text = self.text;
        let ls = line_start(text, el.at);
        let line_end = text
            .get(el.end..)
            .and_then(|rest| rest.find('\n'))
            .map(|i| el.end + i);
        let before = text.get(ls..el.at).unwrap_or("x");
        let after = text
            .get(el.end..line_end.unwrap_or(text.len()))
            .unwrap_or("x");
        if is_blank(before) && is_blank(after) {
            self.push(ls, line_end.map_or(text.len(), |i| i + 1), String::new());
        } else if is_blank(before) {
            // `<host …/>  <!-- note -->`: the comment moves to where the element was.
            let gap = after.len() - after.trim_start_matches([' ', '\t']).len();
            self.push(el.at, el.end + gap, String::new());
        } else {
            self.push(el.at, el.end, String::new());
        }
    }

    /// Sets an attribute: its value replaced in place (keeping its quotes), or a
    /// new attribute after the last one.
    /// Writes changed options as attributes; a setting back at its default is
    /// removed.
    fn set_options(&mut self, el: &Element, changed: &[Written]) {
        for o in changed {
            if o.default {
                self.remove_attr(el, o.xml_name);
            } else {
                self.set_attr(el, o.xml_name, &o.xml);
            }
        }
    }

    fn set_attr(&mut self, el: &Element, name: &str, value: &str) {
        match el.attrs.iter().find(|a| a.name == name) {
            Some(a) => self.push(a.value_at, a.value_at + a.value_len, esc(value)),
            None => {
                // Past the last attribute's closing quote, or the element's name.
                let at = el
                    .attrs
                    .last()
                    .map_or(el.at + 1 + el.name.len(), |a| a.value_at + a.value_len + 1);
                self.push(at, at, format!(" {name}=\"{}\"", esc(value)));
            }
        }
    }

    /// Removes an attribute with the blanks before it; nothing if it is absent.
    fn remove_attr(&mut self, el: &Element, name: &str) {
        let Some(a) = el.attrs.iter().find(|a| a.name == name) else {
            return;
        };
        let before = self.text.get(..a.name_at).unwrap_or("");
        let start = before.trim_end_matches([' ', '\t', '\r', '\n']).len();
        // Through the closing quote.
        self.push(start, a.value_at + a.value_len + 1, String::new());
    }

    /// Where text inserted after `el` goes: after its line when only comments
    /// follow it there (they stay with it), else right after it.
    fn after(&self, el: &Element) -> (usize, bool) {
        let text = self.text;
        let line_end = text
            .get(el.end..)
            .and_then(|rest| rest.find('\n'))
            .map(|i| el.end + i);
        let mut rest = text
            .get(el.end..line_end.unwrap_or(text.len()))
            .unwrap_or("x");
        loop {
            rest = rest.trim_start_matches([' ', '\t', '\r']);
            if rest.is_empty() {
                return match line_end {
                    Some(i) => (i + 1, true),
                    None => (el.end, false),
                };
            }
            match rest
                .strip_prefix("<!--")
                .and_then(|c| c.find("-->").map(|e| &c[e + 3..]))
            {
                Some(after_comment) => rest = after_comment,
                None => return (el.end, false),
            }
        }
    }

    /// Inserts rendered elements after `anchor`, with its indentation.
    fn insert_after(&mut self, anchor: &Element, render: impl FnOnce(&str, &str) -> Vec<String>) {
        let indent = indent_at(self.text, anchor.at).to_string();
        let items = render(&indent, &self.step.clone());
        if items.is_empty() {
            return;
        }
        let with = match self.after(anchor) {
            (at, true) => (at, items.iter().map(|i| format!("{i}\n")).collect()),
            (at, false) => (at, items.iter().map(|i| format!("\n{i}")).collect()),
        };
        self.push(with.0, with.0, with.1);
    }

    /// Inserts rendered elements before `el`, with its indentation.
    fn insert_before(&mut self, el: &Element, render: impl FnOnce(&str, &str) -> Vec<String>) {
        let text = self.text;
        let indent = indent_at(text, el.at).to_string();
        let items = render(&indent, &self.step.clone());
        if items.is_empty() {
            return;
        }
        let ls = line_start(text, el.at);
        if is_blank(text.get(ls..el.at).unwrap_or("x")) {
            self.push(ls, ls, items.iter().map(|i| format!("{i}\n")).collect());
        } else {
            let with = items
                .iter()
                .map(|i| format!("{}\n{indent}", i.trim_start()))
                .collect();
            self.push(el.at, el.at, with);
        }
    }

    /// Inserts rendered elements at the end of `parent`, one step deeper than it.
    fn insert_into(&mut self, parent: &Element, render: impl FnOnce(&str, &str) -> Vec<String>) {
        let text = self.text;
        let step = self.step.clone();
        let parent_indent = indent_at(text, parent.at).to_string();
        let items = render(&format!("{parent_indent}{step}"), &step);
        if items.is_empty() {
            return;
        }
        let lines: String = items.iter().map(|i| format!("\n{i}")).collect();
        match parent.close_at {
            Some(close) => {
                let ls = line_start(text, close);
                if is_blank(text.get(ls..close).unwrap_or("x")) {
                    let with = items.iter().map(|i| format!("{i}\n")).collect();
                    self.push(ls, ls, with);
                } else {
                    self.push(close, close, format!("{lines}\n{parent_indent}"));
                }
            }
            None => {
                // <parent …/> becomes <parent …> children </parent>.
                let slash = parent.end.saturating_sub(2);
                if text.get(slash..parent.end) != Some("/>") {
                    self.failed = true;
                    return;
                }
                let with = format!(">{lines}\n{parent_indent}</{}>", parent.name);
                self.push(slash, parent.end, with);
            }
        }
    }

    /// After `anchor` when there is one, else at the end of `parent`.
    /// `render(indent, step)` gives one string per element, each line indented.
    fn add(
        &mut self,
        parent: &Element,
        anchor: Option<&Element>,
        render: impl FnOnce(&str, &str) -> Vec<String>,
    ) {
        match anchor {
            Some(anchor) => self.insert_after(anchor, render),
            None => self.insert_into(parent, render),
        }
    }

    /// Brings a list of elements (`els`, one per `boot` item) to `running`
    /// (the pair is `(boot, running)`):
    /// elements of items gone are removed, items kept are handed to `keep` with
    /// their element, and new items are inserted where `running` has them: after
    /// the element of the kept item before them, or before the first kept one.
    /// Items are the same item when their `key`s are equal.
    fn sync<'i, T, K: Eq + std::hash::Hash>(
        &mut self,
        parent: &Element,
        els: &[&Element],
        (boot, running): (&'i [T], &'i [T]),
        key: impl Fn(&'i T) -> K,
        mut keep: impl FnMut(&mut Self, &Element, &T, &T) -> Option<()>,
        render: impl Fn(&T, &str, &str) -> String,
    ) -> Option<()> {
        if els.len() != boot.len() {
            return None;
        }
        let running_at = first_index(running, &key);
        for (el, b) in els.iter().zip(boot) {
            match running_at.get(&key(b)) {
                None => self.remove(el),
                Some(&i) => keep(self, el, b, &running[i])?,
            }
        }
        let boot_at = first_index(boot, &key);
        let element_of = |r: &'i T| boot_at.get(&key(r)).map(|&i| els[i]);
        let mut anchor: Option<&Element> = None;
        let mut pending: Vec<&T> = Vec::new();
        for r in running {
            let Some(el) = element_of(r) else {
                pending.push(r);
                continue;
            };
            if !pending.is_empty() {
                let items = std::mem::take(&mut pending);
                let render =
                    |ind: &str, step: &str| items.iter().map(|i| render(i, ind, step)).collect();
                match anchor {
                    Some(anchor) => self.insert_after(anchor, render),
                    None => self.insert_before(el, render),
                }
            }
            anchor = Some(el);
        }
        self.add(parent, anchor, |ind, step| {
            pending.iter().map(|i| render(i, ind, step)).collect()
        });
        Some(())
    }

    fn services(
        &mut self,
        root: &Element,
        boot: &[ServiceConfig],
        running: &[ServiceConfig],
    ) -> Option<()> {
        self.sync(
            root,
            &kids(root, "service"),
            (boot, running),
            |x| x.name.as_str(),
            |ed, el, b, r| ed.service(el, b, r),
            xml_service,
        )
    }

    fn service(&mut self, el: &Element, b: &ServiceConfig, r: &ServiceConfig) -> Option<()> {
        if b == r {
            return Some(());
        }
        if b.connect_timeout != r.connect_timeout {
            self.set_attr(el, "connectTimeout", &seconds(r.connect_timeout));
        }
        self.set_options(el, &r.options.differing(&b.options));
        self.sync(
            el,
            &kids(el, "listen"),
            (&b.listeners, &r.listeners),
            |x| &x.addr,
            |ed, le, bl, rl| {
                ed.set_options(le, &rl.options.differing(&bl.options));
                ed.tls(le, bl.tls.as_ref(), rl.tls.as_ref())?;
                ed.routes(le, &bl.routes, &rl.routes)
            },
            xml_listen,
        )?;
        let enable_el = kids(el, "enable").into_iter().next();
        let named = enable_el.is_some();
        self.sync(
            el,
            &kids(el, "group"),
            (&b.groups, &r.groups),
            |x| x.name.as_str(),
            |ed, ge, bg, rg| ed.group(ge, bg, rg, rg.name == r.enabled_group, named),
            |g, ind, step| xml_group(g, g.name == r.enabled_group, ind, step),
        )?;
        if let Some(e) = enable_el
            && attr_value(e, "group") != Some(r.enabled_group.as_str())
        {
            self.set_attr(e, "group", &r.enabled_group);
        }
        Some(())
    }

    /// Brings a listener's `<tls>` elements to `running`: each is rewritten
    /// in place (its line's comments kept), extra ones removed, new ones
    /// inserted after the last (or before the first route).
    fn tls(
        &mut self,
        listen: &Element,
        boot: Option<&ListenerTls>,
        running: Option<&ListenerTls>,
    ) -> Option<()> {
        if boot == running {
            return Some(());
        }
        let els = kids(listen, "tls");
        if els.len() != boot.map_or(0, ListenerTls::entries) {
            return None;
        }
        let rendered: Vec<String> = running.map_or_else(Vec::new, |tls| xml_tls_entries(tls, ""));
        for (el, text) in els.iter().zip(&rendered) {
            self.push(el.at, el.end, text.clone());
        }
        for el in els.iter().skip(rendered.len()) {
            self.remove(el);
        }
        let Some(tls) = running.filter(|_| rendered.len() > els.len()) else {
            return Some(());
        };
        let from = els.len();
        let render = |ind: &str, _: &str| xml_tls_entries(tls, ind).split_off(from);
        let routes = kids(listen, "route");
        if let Some(last) = els.last() {
            self.insert_after(last, render);
        } else if let Some(first) = routes.first() {
            self.insert_before(first, render);
        } else {
            self.insert_into(listen, render);
        }
        Some(())
    }

    /// Brings a listener's routes to `running`. Routes have no name to match
    /// them by and their order matters, so the routes both share at the start
    /// and at the end keep their elements (and the comments around them), and
    /// those in between are rewritten in place, removed or inserted: adding,
    /// removing or changing one route touches that route's line only.
    fn routes(&mut self, listen: &Element, boot: &[Route], running: &[Route]) -> Option<()> {
        if boot == running {
            return Some(());
        }
        let els = kids(listen, "route");
        if els.len() != boot.len() {
            return None;
        }
        let (prefix, suffix) = common_ends(boot, running);
        let old = &els[prefix..boot.len() - suffix];
        let new = &running[prefix..running.len() - suffix];
        // Changed routes are rewritten where they are, keeping their lines'
        // comments; the rest are removed or inserted after them.
        let paired = old.len().min(new.len());
        for (el, route) in old.iter().zip(new) {
            self.push(el.at, el.end, xml_route(route, ""));
        }
        for el in &old[paired..] {
            self.remove(el);
        }
        let added = &new[paired..];
        if added.is_empty() {
            return Some(());
        }
        let render = |ind: &str, _: &str| added.iter().map(|r| xml_route(r, ind)).collect();
        let before = prefix + paired;
        if before > 0 {
            self.insert_after(els[before - 1], render);
        } else if suffix > 0 {
            self.insert_before(els[boot.len() - suffix], render);
        } else {
            self.insert_into(listen, render);
        }
        Some(())
    }

    /// `enabled`: whether the running configuration enables this group;
    /// `named_elsewhere`: whether the service has an `<enable group>` element.
    fn group(
        &mut self,
        el: &Element,
        b: &GroupConfig,
        r: &GroupConfig,
        enabled: bool,
        named_elsewhere: bool,
    ) -> Option<()> {
        if b.scheduler != r.scheduler {
            self.set_attr(el, "scheduler", r.scheduler.name());
        }
        self.set_options(el, &r.options.differing(&b.options));
        match attr_value(el, "enable") {
            Some(flag) if parse_bool(flag) != enabled => self.set_attr(el, "enable", yes(enabled)),
            Some(_) => {}
            None if enabled && !named_elsewhere => self.set_attr(el, "enable", "true"),
            None => {}
        }
        self.check(el, b.check.as_ref(), r.check.as_ref());
        self.agent(el, b.agent.as_ref(), r.agent.as_ref());
        let (boot, running): (Vec<_>, Vec<_>) =
            (b.hosts.iter().collect(), r.hosts.iter().collect());
        self.sync(
            el,
            &kids(el, "host"),
            (&boot, &running),
            |x| x.name.as_str(),
            |ed, he, bh, rh| {
                if rh.address != bh.address {
                    ed.set_attr(he, "ip", &rh.address.to_string());
                }
                if rh.weight != bh.weight {
                    ed.set_attr(he, "weight", &rh.weight.to_string());
                }
                ed.set_options(he, &rh.options.differing(&bh.options));
                Some(())
            },
            |h, ind, _| xml_host(h, ind),
        )
    }

    /// A group's `<check>`: settings edited in place, the element added
    /// before the first host (or removed).
    fn check(&mut self, group: &Element, b: Option<&CheckConfig>, r: Option<&CheckConfig>) {
        if b == r {
            return;
        }
        match (r, kids(group, "check").into_iter().next()) {
            (None, Some(el)) => self.remove(el),
            (None, None) => {}
            (Some(r), Some(el)) => {
                let base = b.cloned().unwrap_or_default();
                for o in r.differing(&base) {
                    // The type stays written even at its default.
                    if o.default && o.xml_name != "type" {
                        self.remove_attr(el, o.xml_name);
                    } else {
                        self.set_attr(el, o.xml_name, &o.xml);
                    }
                }
            }
            (Some(r), None) => match kids(group, "host").into_iter().next() {
                Some(first) => self.insert_before(first, |ind, _| vec![xml_check(r, ind)]),
                None => self.insert_into(group, |ind, _| vec![xml_check(r, ind)]),
            },
        }
    }

    /// A group's `<agent>`: settings edited in place, the element added
    /// before the first host (or removed).
    fn agent(&mut self, group: &Element, b: Option<&AgentConfig>, r: Option<&AgentConfig>) {
        if b == r {
            return;
        }
        match (r, kids(group, "agent").into_iter().next()) {
            (None, Some(el)) => self.remove(el),
            (None, None) => {}
            (Some(r), Some(el)) => {
                let base = b.cloned().unwrap_or_default();
                for o in r.differing(&base) {
                    if o.default {
                        self.remove_attr(el, o.xml_name);
                    } else {
                        self.set_attr(el, o.xml_name, &o.xml);
                    }
                }
            }
            (Some(r), None) => match kids(group, "host").into_iter().next() {
                Some(first) => self.insert_before(first, |ind, _| vec![xml_agent(r, ind)]),
                None => self.insert_into(group, |ind, _| vec![xml_agent(r, ind)]),
            },
        }
    }

    fn admin(
        &mut self,
        root: &Element,
        boot: Option<&AdminConfig>,
        running: Option<&AdminConfig>,
    ) -> Option<()> {
        if boot == running {
            return Some(());
        }
        let el = kids(root, "admin").into_iter().next();
        match (boot, running, el) {
            (_, None, Some(el)) => self.remove(el),
            (_, None, None) => {}
            (_, Some(r), None) => {
                let base = self.base_dir;
                self.add(root, None, |ind, step| vec![xml_admin(r, ind, step, base)])
            }
            (None, Some(_), Some(_)) => return None,
            (Some(b), Some(r), Some(el)) => {
                self.web(el, b.web.as_ref(), r.web.as_ref());
                self.ssh(el, b.ssh.as_ref(), r.ssh.as_ref());
                self.users(el, &b.users, &r.users)?;
            }
        }
        Some(())
    }

    fn web(&mut self, admin: &Element, b: Option<&AdminWebConfig>, r: Option<&AdminWebConfig>) {
        if b == r {
            return;
        }
        let el = kids(admin, "web").into_iter().next();
        match (b, r, el) {
            (_, None, Some(el)) => self.remove(el),
            (Some(b), Some(r), Some(el)) => {
                if b.listen != r.listen {
                    self.set_attr(el, "listen", &r.listen.to_string());
                }
                if b.enable != r.enable {
                    self.set_attr(el, "enable", yes(r.enable));
                }
                if b.secure != r.secure {
                    self.set_attr(el, "secure", yes(r.secure));
                }
                if b.refresh != r.refresh {
                    self.set_attr(el, "refresh", &seconds(r.refresh));
                }
            }
            (_, Some(r), _) => {
                let anchor = admin.children.first();
                // Before the first child keeps <web> at the top; after it is simpler.
                let base = self.base_dir;
                self.add(admin, anchor, |ind, _| vec![xml_web(r, ind, base)]);
            }
            (_, None, None) => {}
        }
    }

    fn ssh(&mut self, admin: &Element, b: Option<&AdminSshConfig>, r: Option<&AdminSshConfig>) {
        if b == r {
            return;
        }
        let el = kids(admin, "ssh").into_iter().next();
        match (b, r, el) {
            (_, None, Some(el)) => self.remove(el),
            (Some(b), Some(r), Some(el)) => {
                if b.listen != r.listen {
                    self.set_attr(el, "listen", &r.listen.to_string());
                }
                if b.enable != r.enable {
                    self.set_attr(el, "enable", yes(r.enable));
                }
                for (name, bp, rp) in [
                    ("authorizedKeys", &b.authorized_keys, &r.authorized_keys),
                    ("hostKey", &b.host_key, &r.host_key),
                ] {
                    match (bp == rp, rp) {
                        (true, _) => {}
                        (false, Some(p)) => {
                            let written = written_path(p, self.base_dir);
                            self.set_attr(el, name, &written);
                        }
                        // No attribute removal in place: the whole file is rendered.
                        (false, None) => self.failed = true,
                    }
                }
            }
            (_, Some(r), _) => {
                let anchor = kids(admin, "web").into_iter().next();
                let base = self.base_dir;
                self.add(admin, anchor, |ind, _| vec![xml_ssh(r, ind, base)]);
            }
            (_, None, None) => {}
        }
    }

    fn users(&mut self, admin: &Element, b: &[UserConfig], r: &[UserConfig]) -> Option<()> {
        self.sync(
            admin,
            &kids(admin, "user"),
            (b, r),
            |x| x.name.as_str(),
            |ed, ue, bu, ru| {
                if ru.password_hash != bu.password_hash {
                    ed.set_attr(ue, "password", &ru.password_hash);
                }
                if ru.access != bu.access {
                    ed.set_attr(ue, "access", ru.access.name());
                }
                Some(())
            },
            |u, ind, _| xml_user(u, ind),
        )
    }

    fn manager(&mut self, root: &Element, b: &ManagerConfig, r: &ManagerConfig) {
        if b == r {
            return;
        }
        let Some(el) = kids(root, "manager").into_iter().next() else {
            self.add(root, None, |ind, step| vec![xml_manager(r, ind, step)]);
            return;
        };
        for (tag, bt, rt) in [
            ("hostCheck", b.host_check, r.host_check),
            ("configCheck", b.config_check, r.config_check),
            ("heartbeat", b.heartbeat, r.heartbeat),
        ] {
            if bt == rt {
                continue;
            }
            match kids(el, tag).into_iter().next() {
                Some(te) => {
                    if bt.interval != rt.interval {
                        self.set_attr(te, "interval", &seconds(rt.interval));
                    }
                    if bt.enable != rt.enable {
                        self.set_attr(te, "enable", yes(rt.enable));
                    }
                }
                None => self.add(el, el.children.last(), |ind, _| {
                    vec![xml_task(tag, rt, ind)]
                }),
            }
        }
    }

    /// `<logging>`: changed attributes set in place; a removed attribute (rare)
    /// falls back to the full rendering.
    fn logging(&mut self, root: &Element, b: &LoggingConfig, r: &LoggingConfig) {
        if b == r {
            return;
        }
        let el = kids(root, "logging").into_iter().next();
        let written = |l: &LoggingConfig| -> Vec<(&'static str, String)> {
            let mut values = logging_values(l);
            for (key, value) in &mut values {
                if *key != "format" {
                    *value = written_path(Path::new(value), self.base_dir);
                }
            }
            values
        };
        let (bv, rv) = (written(b), written(r));
        match (r.is_empty(), el) {
            (true, Some(el)) => self.remove(el),
            (true, None) => {}
            (false, None) => {
                let attrs: String = rv
                    .iter()
                    .map(|(k, v)| format!(" {k}=\"{}\"", esc(v)))
                    .collect();
                self.add(root, None, |ind, _| vec![format!("{ind}<logging{attrs}/>")]);
            }
            (false, Some(el)) => {
                if bv.iter().any(|(k, _)| !rv.iter().any(|(rk, _)| rk == k)) {
                    self.failed = true;
                    return;
                }
                for (key, value) in &rv {
                    if !bv.contains(&(*key, value.clone())) {
                        self.set_attr(el, key, value);
                    }
                }
            }
        }
    }

    /// `<control socket>`: one path attribute.
    fn path_leaf(
        &mut self,
        root: &Element,
        tag: &str,
        key: &str,
        b: Option<&Path>,
        r: Option<&Path>,
    ) {
        if b == r {
            return;
        }
        let el = kids(root, tag).into_iter().next();
        match (r, el) {
            (None, Some(el)) => self.remove(el),
            (None, None) => {}
            (Some(p), Some(el)) => {
                let written = written_path(p, self.base_dir);
                self.set_attr(el, key, &written);
            }
            (Some(p), None) => {
                let written = written_path(p, self.base_dir);
                self.add(root, None, |ind, _| {
                    vec![format!("{ind}<{tag} {key}=\"{}\"/>", esc(&written))]
                });
            }
        }
    }
}
