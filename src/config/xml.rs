//! Reads txLoadBalancer's XML configuration into the raw tree, with positions.
//!
//! Two passes: quick-xml events → a small element tree (dropping comments, CDATA,
//! text, processing instructions and `<note>` elements with all they contain),
//! then the tree → [`RawConfig`], refusing unknown elements and attributes so
//! typos are caught. Values are read and checked later, by `read` and `check`.

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};

use super::depth::{MAX_DEPTH, too_deep};
use super::error::{ConfigError, Source};
use super::options::{
    AcmeConfig, AgentConfig, CheckConfig, GroupOptions, HostOptions, ListenOptions,
    ResolverOptions, ServiceOptions, TlsOptions,
};
use super::parse::parse_bool;
use super::raw::*;

/// The element whose content is ignored everywhere: free-form notes.
const NOTE: &str = "note";

/// One attribute, decoded, with where its name and value start.
#[derive(Debug)]
pub(crate) struct Attr {
    pub name: String,
    pub name_at: usize,
    /// The value after unescaping and normalisation.
    pub value: String,
    /// Where the value as written starts (after the quote).
    pub value_at: usize,
    /// Length in bytes of the value as written (escaped, between the quotes).
    pub value_len: usize,
}

/// One element, with its byte span (write-back edits the text in place).
#[derive(Debug)]
pub(crate) struct Element {
    pub name: String,
    /// Where its `<` is.
    pub at: usize,
    /// Where its end tag's `</` is; `None` for an empty element (`<x/>`).
    pub close_at: Option<usize>,
    /// Just past its last `>`.
    pub end: usize,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
}

/// Byte offset of `part` inside `text`, when `part` borrows from it.
///
/// quick-xml's slice reader hands out slices of the input, so names and values
/// can be located exactly; anything else (an unescaped copy) is `None`.
fn offset_in(text: &str, part: &str) -> Option<usize> {
    let start = text.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    (p >= start && p + part.len() <= start + text.len()).then(|| p - start)
}

fn malformed(src: &Source<'_>, at: usize, what: impl std::fmt::Display) -> ConfigError {
    src.error(at, format!("malformed XML: {what}"))
}

/// Decodes a start tag's name and attributes.
fn element(src: &Source<'_>, start: &BytesStart<'_>, at: usize) -> Result<Element, ConfigError> {
    let text = src.text();
    let name = start.name().as_ref().to_string();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| {
            // Attribute error positions count from the first byte after '<'.
            const SHAPE: &str = "expected name=\"value\"";
            let (pos, what) = match e {
                AttrError::ExpectedEq(p) => (p, format!("attribute without a value ({SHAPE})")),
                AttrError::ExpectedValue(p) => (p, format!("attribute without a value ({SHAPE})")),
                AttrError::UnquotedValue(p) => (p, format!("attribute value not quoted ({SHAPE})")),
                AttrError::ExpectedQuote(p, _) => {
                    (p, format!("attribute value not closed ({SHAPE})"))
                }
                AttrError::Duplicated(p, _) => (p, "duplicate attribute".to_string()),
            };
            malformed(src, at + 1 + pos, what)
        })?;
        let key = attr.key.as_ref();
        let name_at = offset_in(text, key).unwrap_or(at);
        let value_at = offset_in(text, &attr.value).unwrap_or(name_at);
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| malformed(src, value_at, e))?
            .into_owned();
        attrs.push(Attr {
            name: key.to_string(),
            name_at,
            value,
            value_at,
            value_len: attr.value.len(),
        });
    }
    Ok(Element {
        name,
        at,
        close_at: None,
        end: at,
        attrs,
        children: Vec::new(),
    })
}

/// Parses the document into its root element, dropping everything ignorable.
/// Elements nested deeper than [`MAX_DEPTH`] are refused as they open, so
/// nothing recursive (dropping the tree, walking it) ever sees a deep one.
pub(crate) fn parse_tree(src: &Source<'_>) -> Result<Element, ConfigError> {
    let mut reader = Reader::from_str(src.text());
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    // Depth inside a <note> being skipped, and where it started.
    let mut note: Option<(usize, usize)> = None;
    loop {
        let at = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|e| {
            let pos = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
            malformed(src, pos, e)
        })?;
        let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        if let Some((depth, start)) = note.as_mut() {
            match event {
                Event::Start(_) => {
                    // The note's own level, its parents' and what it holds.
                    if open.len() + *depth + 1 > MAX_DEPTH {
                        return Err(too_deep(src, at, "elements"));
                    }
                    *depth += 1;
                }
                Event::End(_) if *depth == 1 => note = None,
                Event::End(_) => *depth -= 1,
                Event::Eof => {
                    return Err(malformed(
                        src,
                        *start,
                        "<note> is not closed (expected </note>)",
                    ));
                }
                _ => {}
            }
            continue;
        }
        let (start, closed) = match event {
            Event::Start(s) => (s, false),
            Event::Empty(s) => (s, true),
            Event::End(_) => {
                // quick-xml has checked the end tag matches; the stack mirrors its own.
                if let Some(mut done) = open.pop() {
                    done.close_at = Some(at);
                    done.end = after;
                    match open.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => root = Some(done),
                    }
                }
                continue;
            }
            Event::Eof => break,
            // Text, CDATA, comments, declarations, PIs and entity references are
            // ignored wherever they are.
            _ => continue,
        };
        if open.len() + 1 > MAX_DEPTH {
            return Err(too_deep(src, at, "elements"));
        }
        if start.name().as_ref() == NOTE {
            if !closed {
                note = Some((1, at));
            }
            continue;
        }
        if open.is_empty()
            && let Some(root) = &root
        {
            return Err(malformed(
                src,
                at,
                format!(
                    "element after the root element <{}> (expected one root)",
                    root.name
                ),
            ));
        }
        let mut el = element(src, &start, at)?;
        el.end = after;
        if closed {
            match open.last_mut() {
                Some(parent) => parent.children.push(el),
                None => root = Some(el),
            }
        } else {
            open.push(el);
        }
    }
    if let Some(unclosed) = open.last() {
        return Err(malformed(
            src,
            unclosed.at,
            format!("<{0}> is not closed (expected </{0}>)", unclosed.name),
        ));
    }
    root.ok_or_else(|| {
        src.error(
            0,
            "no <config> element (expected an XML document with a <config> root)",
        )
    })
}

/// Walks the tree, checking element and attribute names.
struct Walker<'s, 'a> {
    src: &'s Source<'a>,
}

impl Walker<'_, '_> {
    /// Refuses attributes not in `allowed`.
    fn check_attrs(&self, el: &Element, allowed: &[&str]) -> Result<(), ConfigError> {
        if let Some(attr) = el
            .attrs
            .iter()
            .find(|a| !allowed.contains(&a.name.as_str()))
        {
            let expected = if allowed.is_empty() {
                "it takes none".to_string()
            } else {
                format!("expected one of: {}", allowed.join(", "))
            };
            return Err(self.src.error(
                attr.name_at,
                format!(
                    "unknown attribute {:?} on <{}> ({expected})",
                    attr.name, el.name
                ),
            ));
        }
        Ok(())
    }

    fn unknown_child(&self, parent: &Element, child: &Element, allowed: &[&str]) -> ConfigError {
        let expected = if allowed.is_empty() {
            "it takes no child elements".to_string()
        } else {
            format!("expected one of: {}", allowed.join(", "))
        };
        self.src.error(
            child.at,
            format!(
                "unknown element <{}> in <{}> ({expected})",
                child.name, parent.name
            ),
        )
    }

    fn no_children(&self, el: &Element) -> Result<(), ConfigError> {
        match el.children.first() {
            Some(child) => Err(self.unknown_child(el, child, &[])),
            None => Ok(()),
        }
    }

    /// An element that may appear only once in its parent.
    fn once<T>(&self, slot: &Option<T>, el: &Element, parent: &Element) -> Result<(), ConfigError> {
        if slot.is_some() {
            return Err(self.src.error(
                el.at,
                format!(
                    "duplicate <{}> in <{}> (expected at most one)",
                    el.name, parent.name
                ),
            ));
        }
        Ok(())
    }

    /// A leaf element with the given attributes.
    fn leaf<'e>(&self, el: &'e Element, allowed: &[&str]) -> Result<Leaf<'e>, ConfigError> {
        self.check_attrs(el, allowed)?;
        self.no_children(el)?;
        Ok(Leaf(el))
    }

    fn config(&self, root: &Element) -> Result<RawConfig, ConfigError> {
        // "pdconfig" is the root PythonDirector and early txLoadBalancer used.
        if root.name != "config" && root.name != "pdconfig" {
            return Err(self.src.error(
                root.at,
                format!("unknown root element <{}> (expected <config>)", root.name),
            ));
        }
        self.check_attrs(root, &[])?;
        const CHILDREN: &[&str] = &[
            "service", "admin", "manager", "logging", "control", "cluster", "resolver", "acme",
        ];
        let mut raw = RawConfig {
            at: root.at,
            ..RawConfig::default()
        };
        for child in &root.children {
            match child.name.as_str() {
                "service" => raw.services.push(self.service(child)?),
                "admin" => {
                    self.once(&raw.admin, child, root)?;
                    raw.admin = Some(self.admin(child)?);
                }
                "manager" => {
                    self.once(&raw.manager, child, root)?;
                    raw.manager = Some(self.manager(child)?);
                }
                "logging" => {
                    self.once(&raw.logging, child, root)?;
                    let leaf = self.leaf(child, &["file", "access", "format"])?;
                    raw.logging = Some(RawLogging {
                        file: leaf.get("file"),
                        access: leaf.get("access"),
                        format: leaf.get("format"),
                    });
                }
                "control" => {
                    self.once(&raw.control, child, root)?;
                    let leaf = self.leaf(child, &["socket"])?;
                    raw.control = Some(RawControl {
                        at: child.at,
                        socket: leaf.get("socket"),
                    });
                }
                "cluster" => {
                    self.once(&raw.cluster, child, root)?;
                    let leaf = self.leaf(child, &["etcd", "prefix", "name"])?;
                    raw.cluster = Some(RawCluster {
                        at: child.at,
                        etcd: leaf.get("etcd"),
                        prefix: leaf.get("prefix"),
                        name: leaf.get("name"),
                    });
                }
                "resolver" => {
                    self.once(&raw.resolver, child, root)?;
                    let leaf = self.leaf(child, &with_options(&[], ResolverOptions::KEYS))?;
                    raw.resolver = Some(RawResolver {
                        at: child.at,
                        options: leaf.options(&[]),
                    });
                }
                "acme" => {
                    self.once(&raw.acme, child, root)?;
                    let leaf = self.leaf(child, &with_options(&[], AcmeConfig::KEYS))?;
                    raw.acme = Some(RawAcme {
                        at: child.at,
                        options: leaf.options(&[]),
                    });
                }
                _ => return Err(self.unknown_child(root, child, CHILDREN)),
            }
        }
        Ok(raw)
    }

    fn service(&self, el: &Element) -> Result<RawService, ConfigError> {
        const CORE: &[&str] = &["name", "connectTimeout"];
        self.check_attrs(el, &with_options(CORE, ServiceOptions::KEYS))?;
        const CHILDREN: &[&str] = &["listen", "group", "enable"];
        let leaf = Leaf(el);
        let mut raw = RawService {
            at: el.at,
            name: leaf.get("name"),
            connect_timeout: leaf.number("connectTimeout"),
            options: leaf.options(CORE),
            ..RawService::default()
        };
        for child in &el.children {
            match child.name.as_str() {
                "listen" => raw.listen.push(self.listen(child)?),
                "group" => raw.groups.push(self.group(child)?),
                "enable" => {
                    self.once(&raw.enabled_group, child, el)?;
                    let leaf = self.leaf(child, &["group"])?;
                    match leaf.get("group") {
                        Some(group) => raw.enabled_group = Some(group),
                        None => {
                            return Err(self.src.error(
                                child.at,
                                "name of the group to enable is missing (expected group=\"NAME\")",
                            ));
                        }
                    }
                }
                _ => return Err(self.unknown_child(el, child, CHILDREN)),
            }
        }
        Ok(raw)
    }

    /// `<listen ip=… …>` with its `<route>`s.
    fn listen(&self, el: &Element) -> Result<RawListen, ConfigError> {
        const LISTEN: &[&str] = &["ip"];
        self.check_attrs(el, &with_options(LISTEN, ListenOptions::KEYS))?;
        let leaf = Leaf(el);
        let Some(ip) = leaf.get("ip") else {
            return Err(self.src.error(
                el.at,
                "listen address is missing (expected ip=\"HOST:PORT\")",
            ));
        };
        let mut routes = Vec::with_capacity(el.children.len());
        let mut tls = Vec::new();
        for child in &el.children {
            if child.name == "tls" {
                const TLS: &[&str] = &["cert", "key", "acme"];
                let leaf = self.leaf(child, &with_options(TLS, TlsOptions::KEYS))?;
                tls.push(RawTls {
                    at: child.at,
                    cert: leaf.get("cert"),
                    key: leaf.get("key"),
                    acme: leaf.get("acme"),
                    options: leaf.options(TLS),
                });
                continue;
            }
            if child.name != "route" {
                return Err(self.unknown_child(el, child, &["route", "tls"]));
            }
            let route = self.leaf(child, &["service", "sni", "alpn", "protocol", "host"])?;
            routes.push(RawRoute {
                at: child.at,
                service: route.get("service"),
                sni: route.get("sni"),
                alpn: route.get("alpn"),
                protocol: route.get("protocol"),
                host: route.get("host"),
            });
        }
        Ok(RawListen {
            at: el.at,
            ip: Some(ip),
            options: leaf.options(LISTEN),
            routes,
            tls,
        })
    }

    fn group(&self, el: &Element) -> Result<RawGroup, ConfigError> {
        const CORE: &[&str] = &["name", "scheduler", "enable"];
        self.check_attrs(el, &with_options(CORE, GroupOptions::KEYS))?;
        let leaf = Leaf(el);
        let mut raw = RawGroup {
            at: el.at,
            name: leaf.get("name"),
            scheduler: leaf.get("scheduler"),
            enable: leaf.bool("enable"),
            hosts: Vec::new(),
            options: leaf.options(CORE),
            check: None,
            agent: None,
        };
        for child in &el.children {
            if child.name == "agent" {
                self.once(&raw.agent, child, el)?;
                let leaf = self.leaf(child, &with_options(&[], AgentConfig::KEYS))?;
                raw.agent = Some(RawCheck {
                    at: child.at,
                    options: leaf.options(&[]),
                });
                continue;
            }
            if child.name == "check" {
                self.once(&raw.check, child, el)?;
                let leaf = self.leaf(child, &with_options(&[], CheckConfig::KEYS))?;
                raw.check = Some(RawCheck {
                    at: child.at,
                    options: leaf.options(&[]),
                });
                continue;
            }
            if child.name != "host" {
                return Err(self.unknown_child(el, child, &["check", "agent", "host"]));
            }
            const HOST: &[&str] = &["name", "ip", "weight"];
            let leaf = self.leaf(child, &with_options(HOST, HostOptions::KEYS))?;
            raw.hosts.push(RawHost {
                at: child.at,
                name: leaf.get("name"),
                ip: leaf.get("ip"),
                weight: leaf.number("weight"),
                options: leaf.options(HOST),
            });
        }
        Ok(raw)
    }

    fn admin(&self, el: &Element) -> Result<RawAdmin, ConfigError> {
        self.check_attrs(el, &[])?;
        let mut raw = RawAdmin::default();
        for child in &el.children {
            match child.name.as_str() {
                "web" => {
                    self.once(&raw.web, child, el)?;
                    let leaf = self.leaf(
                        child,
                        &[
                            "listen",
                            "enable",
                            "secure",
                            "refresh",
                            "metricsPublic",
                            "cert",
                            "key",
                            "allowedHosts",
                            "changesRequirePost",
                        ],
                    )?;
                    raw.web = Some(RawWeb {
                        at: child.at,
                        listen: leaf.get("listen"),
                        enable: leaf.bool("enable"),
                        secure: leaf.bool("secure"),
                        refresh: leaf.number("refresh"),
                        metrics_public: leaf.bool("metricsPublic"),
                        cert: leaf.get("cert"),
                        key: leaf.get("key"),
                        allowed_hosts: leaf.get("allowedHosts").map(|a| {
                            let names = a.value.split([',', ' ']).filter(|n| !n.is_empty());
                            At::new(names.map(str::to_string).collect(), a.at)
                        }),
                        changes_require_post: leaf.bool("changesRequirePost"),
                    });
                }
                "ssh" => {
                    self.once(&raw.ssh, child, el)?;
                    let leaf = self.leaf(
                        child,
                        &[
                            "listen",
                            "enable",
                            "authorizedKeys",
                            "hostKey",
                            "scriptTimeout",
                        ],
                    )?;
                    raw.ssh = Some(RawSsh {
                        at: child.at,
                        listen: leaf.get("listen"),
                        enable: leaf.bool("enable"),
                        authorized_keys: leaf.get("authorizedKeys"),
                        host_key: leaf.get("hostKey"),
                        script_timeout: leaf.number("scriptTimeout"),
                    });
                }
                "user" => {
                    let leaf = self.leaf(child, &["name", "password", "access"])?;
                    raw.users.push(RawUser {
                        at: child.at,
                        name: leaf.get("name"),
                        password: leaf.get("password"),
                        access: leaf.get("access"),
                    });
                }
                _ => return Err(self.unknown_child(el, child, &["web", "ssh", "user"])),
            }
        }
        Ok(raw)
    }

    fn manager(&self, el: &Element) -> Result<RawManager, ConfigError> {
        self.check_attrs(el, &[])?;
        let mut raw = RawManager::default();
        for child in &el.children {
            let slot = match child.name.as_str() {
                "hostCheck" => &mut raw.host_check,
                "configCheck" => &mut raw.config_check,
                "heartbeat" => &mut raw.heartbeat,
                _ => {
                    return Err(self.unknown_child(
                        el,
                        child,
                        &["hostCheck", "configCheck", "heartbeat"],
                    ));
                }
            };
            self.once(slot, child, el)?;
            let leaf = self.leaf(child, &["interval", "enable"])?;
            *slot = Some(RawTask {
                interval: leaf.number("interval"),
                enable: leaf.bool("enable"),
            });
        }
        Ok(raw)
    }
}

/// Attribute access on an element whose attribute names were already checked.
struct Leaf<'e>(&'e Element);

impl Leaf<'_> {
    fn attr(&self, name: &str) -> Option<&Attr> {
        self.0.attrs.iter().find(|a| a.name == name)
    }

    fn get(&self, name: &str) -> Option<At<String>> {
        self.attr(name)
            .map(|a| At::new(a.value.clone(), a.value_at))
    }

    fn bool(&self, name: &str) -> Option<At<bool>> {
        self.attr(name)
            .map(|a| At::new(parse_bool(&a.value), a.value_at))
    }

    fn number(&self, name: &str) -> Option<At<Number>> {
        self.attr(name)
            .map(|a| At::new(Number::Text(a.value.clone()), a.value_at))
    }

    /// Every attribute not in `core`: the element's options, checked later.
    fn options(&self, core: &[&str]) -> Vec<(At<String>, At<RawValue>)> {
        self.0
            .attrs
            .iter()
            .filter(|a| !core.contains(&a.name.as_str()))
            .map(|a| {
                (
                    At::new(a.name.clone(), a.name_at),
                    At::new(RawValue::Text(a.value.clone()), a.value_at),
                )
            })
            .collect()
    }
}

/// The attributes an element accepts: its own and its options' XML names.
fn with_options<'a>(core: &[&'a str], options: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    core.iter()
        .copied()
        .chain(options.iter().map(|(xml, _)| *xml))
        .collect()
}

/// Parses XML text into the raw tree.
pub(crate) fn read(src: &Source<'_>) -> Result<RawConfig, ConfigError> {
    let root = parse_tree(src)?;
    Walker { src }.config(&root)
}
