//! Writes a [`Config`] back as txLoadBalancer XML or as TOML, loadable again.
//!
//! Used for write-back (`saveConfig`, the configCheck manager) and the admin
//! API's `running.xml`. Everything the model holds is written, defaults
//! included, except the connect timeout when it is the default and a group's
//! slow start when it has none: that keeps files readable by txLoadBalancer
//! itself, which knows no such attributes.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::model::*;
use super::options::Written;

/// Seconds as a plain decimal, exactly: `10`, `0.5`, `1.000000001`.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        return d.as_secs().to_string();
    }
    let frac = format!("{:09}", d.subsec_nanos());
    format!("{}.{}", d.as_secs(), frac.trim_end_matches('0'))
}

pub(crate) fn yes(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Escapes text for a double-quoted XML attribute. Tabs and line breaks become
/// character references, because attribute normalisation would turn them into
/// spaces.
pub(crate) fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The set keys of `<logging>` / `[logging]`, as text.
pub(crate) fn logging_values(l: &LoggingConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(file) = &l.file {
        out.push(("file", path_text(file)));
    }
    if let Some(access) = &l.access {
        out.push(("access", path_text(access)));
    }
    if l.access_format != AccessFormat::Text {
        out.push(("format", l.access_format.name().to_string()));
    }
    out
}

/// The `<logging …/>` element.
pub(crate) fn xml_logging(l: &LoggingConfig) -> String {
    let attrs: String = logging_values(l)
        .iter()
        .map(|(k, v)| format!(" {k}=\"{}\"", attr(v)))
        .collect();
    format!("<logging{attrs}/>")
}

/// Options as XML attributes, each with a leading space.
pub(crate) fn xml_options(options: &[Written]) -> String {
    options
        .iter()
        .map(|o| format!(" {}=\"{}\"", o.xml_name, attr(&o.xml)))
        .collect()
}

/// Options as more keys of an inline table, each with a leading comma.
pub(crate) fn toml_inline_options(options: &[Written]) -> String {
    options
        .iter()
        .map(|o| format!(", {} = {}", o.toml_key, o.toml))
        .collect()
}

/// A path as a file writes it: relative to `base_dir` (the file's directory)
/// when it lies under it, as it is otherwise.
pub(crate) fn written_path(p: &Path, base_dir: Option<&Path>) -> String {
    match base_dir.and_then(|dir| p.strip_prefix(dir).ok()) {
        Some(relative) if !relative.as_os_str().is_empty() => path_text(relative),
        _ => path_text(p),
    }
}

// The XML elements, one renderer each, shared by `to_xml` and the write-back's
// in-place editor: `ind` is the element's indentation, `step` one level more;
// an element of several lines has no final line break.

/// `<listen ip=…/>`, or `<listen ip=…>` with its routes.
pub(crate) fn xml_listen(l: &Listener, ind: &str, step: &str) -> String {
    let mut x = format!(
        "{ind}<listen ip=\"{}\"{}",
        attr(&l.addr.to_string()),
        xml_options(&l.options.non_default())
    );
    if l.routes.is_empty() && l.tls.is_none() {
        x.push_str("/>");
        return x;
    }
    x.push('>');
    let inner = format!("{ind}{step}");
    if let Some(tls) = &l.tls {
        for entry in xml_tls_entries(tls, &inner) {
            x.push('\n');
            x.push_str(&entry);
        }
    }
    for r in &l.routes {
        x.push('\n');
        x.push_str(&xml_route(r, &inner));
    }
    let _ = write!(x, "\n{ind}</listen>");
    x
}

/// The settings written on `<tls>` number `index` of a listener: the
/// listener's, on the first only.
pub(crate) fn tls_settings(tls: &ListenerTls, index: usize) -> Vec<Written> {
    match index {
        0 => tls.options.non_default(),
        _ => Vec::new(),
    }
}

/// `<tls cert=… key=… …/>`.
pub(crate) fn xml_tls(pair: &TlsCert, settings: Vec<Written>, ind: &str) -> String {
    format!(
        "{ind}<tls cert=\"{}\" key=\"{}\"{}/>",
        attr(&path_text(&pair.cert)),
        attr(&path_text(&pair.key)),
        xml_options(&settings)
    )
}

/// Each `<tls>` of a listener, indented by `ind`: its files' (`<tls cert
/// key>`), or its certificates from ACME (`<tls acme="…">`).
pub(crate) fn xml_tls_entries(tls: &ListenerTls, ind: &str) -> Vec<String> {
    if !tls.acme.is_empty() {
        return (tls.acme.iter().enumerate())
            .map(|(i, cert)| {
                format!(
                    "{ind}<tls acme=\"{}\"{}/>",
                    attr(&cert.names.join(" ")),
                    xml_options(&tls_settings(tls, i))
                )
            })
            .collect();
    }
    (0..tls.certs.len())
        .map(|i| xml_tls(&tls.certs[i], tls_settings(tls, i), ind))
        .collect()
}

/// Each entry of a listener's `tls` array (see [`xml_tls_entries`]).
pub(crate) fn toml_tls_entries(tls: &ListenerTls) -> Vec<String> {
    if !tls.acme.is_empty() {
        return (tls.acme.iter().enumerate())
            .map(|(i, cert)| {
                format!(
                    "{{ acme = {}{} }}",
                    tstr(&cert.names.join(" ")),
                    toml_inline_options(&tls_settings(tls, i))
                )
            })
            .collect();
    }
    (0..tls.certs.len())
        .map(|i| toml_tls(&tls.certs[i], tls_settings(tls, i)))
        .collect()
}

/// A `tls` entry: `{ cert = …, key = …, … }`.
pub(crate) fn toml_tls(pair: &TlsCert, settings: Vec<Written>) -> String {
    format!(
        "{{ cert = {}, key = {}{} }}",
        tstr(&path_text(&pair.cert)),
        tstr(&path_text(&pair.key)),
        toml_inline_options(&settings)
    )
}

/// A listener's whole `tls` array, one entry per line indented by `ind` and
/// one more level.
pub(crate) fn toml_tls_array(tls: &ListenerTls, ind: &str) -> String {
    let mut t = String::from("[");
    for entry in toml_tls_entries(tls) {
        let _ = write!(t, "\n{ind}  {entry},");
    }
    let _ = write!(t, "\n{ind}]");
    t
}

/// A route's settings as (key, value), conditions first, as both formats
/// write them.
pub(crate) fn route_values(r: &Route) -> Vec<(&'static str, &str)> {
    let mut out = Vec::with_capacity(5);
    if let Some(protocol) = r.protocol {
        out.push(("protocol", protocol.as_str()));
    }
    for (key, value) in [("sni", &r.sni), ("alpn", &r.alpn), ("host", &r.host)] {
        if let Some(value) = value {
            out.push((key, value.as_str()));
        }
    }
    out.push(("service", r.service.as_str()));
    out
}

/// `<route sni=… service=…/>`.
pub(crate) fn xml_route(r: &Route, ind: &str) -> String {
    let attrs: String = route_values(r)
        .iter()
        .map(|(k, v)| format!(" {k}=\"{}\"", attr(v)))
        .collect();
    format!("{ind}<route{attrs}/>")
}

/// `<host name=… ip=… weight=…/>`.
pub(crate) fn xml_host(h: &HostConfig, ind: &str) -> String {
    format!(
        "{ind}<host name=\"{}\" ip=\"{}\" weight=\"{}\"{}/>",
        attr(&h.name),
        attr(&h.address.to_string()),
        h.weight,
        xml_options(&h.options.non_default())
    )
}

/// The settings of a check as written: its type always, the others when not
/// at their defaults.
fn check_settings(c: &CheckConfig) -> Vec<Written> {
    let mut written = c.differing(&CheckConfig::of(c.kind));
    written.insert(
        0,
        Written {
            xml_name: "type",
            toml_key: "type",
            xml: c.kind.name().to_string(),
            toml: tstr(c.kind.name()),
            default: false,
        },
    );
    written
}

/// `<check type=… …/>`.
pub(crate) fn xml_check(c: &CheckConfig, ind: &str) -> String {
    format!("{ind}<check{}/>", xml_options(&check_settings(c)))
}

/// `{ type = …, … }`.
pub(crate) fn toml_check(c: &CheckConfig) -> String {
    let settings = toml_inline_options(&check_settings(c));
    format!("{{ {} }}", settings.trim_start_matches(", "))
}

/// `<agent …/>`.
pub(crate) fn xml_agent(a: &AgentConfig, ind: &str) -> String {
    format!("{ind}<agent{}/>", xml_options(&a.non_default()))
}

/// `{ port = …, … }`.
pub(crate) fn toml_agent(a: &AgentConfig) -> String {
    let settings = toml_inline_options(&a.non_default());
    format!("{{ {} }}", settings.trim_start_matches(", "))
}

/// `<group …>` with its check and hosts.
pub(crate) fn xml_group(g: &GroupConfig, enabled: bool, ind: &str, step: &str) -> String {
    let enable = if enabled { " enable=\"true\"" } else { "" };
    let mut x = format!(
        "{ind}<group name=\"{}\" scheduler=\"{}\"{enable}{}>",
        attr(&g.name),
        g.scheduler,
        xml_options(&g.options.non_default())
    );
    let inner = format!("{ind}{step}");
    if let Some(check) = &g.check {
        x.push('\n');
        x.push_str(&xml_check(check, &inner));
    }
    if let Some(agent) = &g.agent {
        x.push('\n');
        x.push_str(&xml_agent(agent, &inner));
    }
    for h in &g.hosts {
        x.push('\n');
        x.push_str(&xml_host(h, &inner));
    }
    let _ = write!(x, "\n{ind}</group>");
    x
}

/// `<service …>` with its listeners and groups.
pub(crate) fn xml_service(s: &ServiceConfig, ind: &str, step: &str) -> String {
    let timeout = if s.connect_timeout == DEFAULT_CONNECT_TIMEOUT {
        String::new()
    } else {
        format!(" connectTimeout=\"{}\"", seconds(s.connect_timeout))
    };
    let mut x = format!(
        "{ind}<service name=\"{}\"{timeout}{}>",
        attr(&s.name),
        xml_options(&s.options.non_default())
    );
    let inner = format!("{ind}{step}");
    for l in &s.listeners {
        x.push('\n');
        x.push_str(&xml_listen(l, &inner, step));
    }
    for g in &s.groups {
        x.push('\n');
        x.push_str(&xml_group(g, g.name == s.enabled_group, &inner, step));
    }
    let _ = write!(x, "\n{ind}</service>");
    x
}

/// `<web …/>`.
pub(crate) fn xml_web(w: &AdminWebConfig, ind: &str, base_dir: Option<&Path>) -> String {
    // txlb's own attributes are written only when set, so files stay
    // readable by txLoadBalancer.
    let mut extra = String::new();
    if w.metrics_public {
        extra.push_str(" metricsPublic=\"true\"");
    }
    if !w.allowed_hosts.is_empty() {
        let _ = write!(
            extra,
            " allowedHosts=\"{}\"",
            attr(&w.allowed_hosts.join(","))
        );
    }
    if w.changes_require_post {
        extra.push_str(" changesRequirePost=\"true\"");
    }
    for (name, path) in [("cert", &w.cert), ("key", &w.key)] {
        if let Some(p) = path {
            let _ = write!(extra, " {name}=\"{}\"", attr(&written_path(p, base_dir)));
        }
    }
    format!(
        "{ind}<web listen=\"{}\" enable=\"{}\" secure=\"{}\" refresh=\"{}\"{extra}/>",
        attr(&w.listen.to_string()),
        yes(w.enable),
        yes(w.secure),
        seconds(w.refresh)
    )
}

/// `<ssh …/>`.
pub(crate) fn xml_ssh(s: &AdminSshConfig, ind: &str, base_dir: Option<&Path>) -> String {
    let mut extra = String::new();
    for (name, path) in [
        ("authorizedKeys", &s.authorized_keys),
        ("hostKey", &s.host_key),
    ] {
        if let Some(p) = path {
            let _ = write!(extra, " {name}=\"{}\"", attr(&written_path(p, base_dir)));
        }
    }
    if s.script_timeout != DEFAULT_SCRIPT_TIMEOUT {
        let _ = write!(extra, " scriptTimeout=\"{}\"", seconds(s.script_timeout));
    }
    format!(
        "{ind}<ssh listen=\"{}\" enable=\"{}\"{extra}/>",
        attr(&s.listen.to_string()),
        yes(s.enable)
    )
}

/// `<user …/>`.
pub(crate) fn xml_user(u: &UserConfig, ind: &str) -> String {
    format!(
        "{ind}<user name=\"{}\" password=\"{}\" access=\"{}\"/>",
        attr(&u.name),
        attr(&u.password_hash),
        u.access.name()
    )
}

/// `<admin>` with its web server, console and users.
pub(crate) fn xml_admin(a: &AdminConfig, ind: &str, step: &str, base_dir: Option<&Path>) -> String {
    let inner = format!("{ind}{step}");
    let mut lines = vec![format!("{ind}<admin>")];
    lines.extend(a.web.iter().map(|w| xml_web(w, &inner, base_dir)));
    lines.extend(a.ssh.iter().map(|s| xml_ssh(s, &inner, base_dir)));
    lines.extend(a.users.iter().map(|u| xml_user(u, &inner)));
    lines.push(format!("{ind}</admin>"));
    lines.join("\n")
}

/// `<hostCheck …/>`, `<configCheck …/>` or `<heartbeat …/>`.
pub(crate) fn xml_task(tag: &str, t: ManagerTask, ind: &str) -> String {
    format!(
        "{ind}<{tag} interval=\"{}\" enable=\"{}\"/>",
        seconds(t.interval),
        yes(t.enable)
    )
}

/// `<manager>` with its three tasks.
pub(crate) fn xml_manager(m: &ManagerConfig, ind: &str, step: &str) -> String {
    let inner = format!("{ind}{step}");
    [
        format!("{ind}<manager>"),
        xml_task("hostCheck", m.host_check, &inner),
        xml_task("configCheck", m.config_check, &inner),
        xml_task("heartbeat", m.heartbeat, &inner),
        format!("{ind}</manager>"),
    ]
    .join("\n")
}

/// The configuration as txLoadBalancer XML.
pub fn to_xml(config: &Config) -> String {
    const IND: &str = "  ";
    let mut x = String::from("<config>\n");
    for s in &config.services {
        let _ = writeln!(x, "{}", xml_service(s, IND, IND));
    }
    if let Some(admin) = &config.admin {
        let _ = writeln!(x, "{}", xml_admin(admin, IND, IND, None));
    }
    let _ = writeln!(x, "{}", xml_manager(&config.manager, IND, IND));
    if !config.logging.is_empty() {
        let _ = writeln!(x, "{IND}{}", xml_logging(&config.logging));
    }
    if let Some(c) = &config.control {
        let _ = writeln!(
            x,
            "{IND}<control socket=\"{}\"/>",
            attr(&path_text(&c.socket))
        );
    }
    if let Some(c) = &config.cluster {
        let _ = writeln!(
            x,
            "{IND}<cluster etcd=\"{}\" prefix=\"{}\" name=\"{}\"/>",
            attr(&c.endpoints.join(",")),
            attr(&c.prefix),
            attr(&c.name)
        );
    }
    let resolver = config.resolver.non_default();
    if !resolver.is_empty() {
        let _ = writeln!(x, "{IND}<resolver{}/>", xml_options(&resolver));
    }
    if let Some(acme) = &config.acme {
        let _ = writeln!(x, "{IND}<acme{}/>", xml_options(&acme.non_default()));
    }
    x.push_str("</config>\n");
    x
}

/// A TOML basic string, quoted and escaped.
pub(crate) fn tstr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `listen` entry: the address, or an inline table when the listener has
/// settings or routes of its own. Routes are one per line, indented by `ind`
/// and one more level.
pub(crate) fn toml_listen(l: &Listener, ind: &str) -> String {
    let options = l.options.non_default();
    if options.is_empty() && l.routes.is_empty() && l.tls.is_none() {
        return tstr(&l.addr.to_string());
    }
    let mut t = format!(
        "{{ ip = {}{}",
        tstr(&l.addr.to_string()),
        toml_inline_options(&options)
    );
    if let Some(tls) = &l.tls {
        let _ = write!(t, ", tls = {}", toml_tls_array(tls, ind));
    }
    if !l.routes.is_empty() {
        t.push_str(", routes = [");
        for r in &l.routes {
            let _ = write!(t, "\n{ind}  {},", toml_route(r));
        }
        let _ = write!(t, "\n{ind}]");
    }
    t.push_str(" }");
    t
}

/// A `routes` entry: `{ sni = …, service = … }`.
pub(crate) fn toml_route(r: &Route) -> String {
    let keys: Vec<String> = route_values(r)
        .iter()
        .map(|(k, v)| format!("{k} = {}", tstr(v)))
        .collect();
    format!("{{ {} }}", keys.join(", "))
}

/// The `listen` array: on one line, or one listener per line when one has
/// routes.
pub(crate) fn toml_listeners(listeners: &[Listener]) -> String {
    if listeners
        .iter()
        .all(|l| l.routes.is_empty() && l.tls.is_none())
    {
        let listen: Vec<String> = listeners.iter().map(|l| toml_listen(l, "")).collect();
        return format!("[{}]", listen.join(", "));
    }
    let mut t = String::from("[");
    for l in listeners {
        let _ = write!(t, "\n  {},", toml_listen(l, "  "));
    }
    t.push_str("\n]");
    t
}

/// The configuration as TOML (the format documented in the `toml` reader).
pub fn to_toml(config: &Config) -> String {
    let mut t = String::new();
    for s in &config.services {
        let _ = writeln!(t, "[[service]]\nname = {}", tstr(&s.name));
        let _ = writeln!(t, "listen = {}", toml_listeners(&s.listeners));
        // A service without groups names none.
        if !s.groups.is_empty() {
            let _ = writeln!(t, "enabled_group = {}", tstr(&s.enabled_group));
        }
        let _ = writeln!(t, "connect_timeout = {}", seconds(s.connect_timeout));
        for o in s.options.non_default() {
            let _ = writeln!(t, "{} = {}", o.toml_key, o.toml);
        }
        for g in &s.groups {
            let _ = writeln!(
                t,
                "\n  [[service.group]]\n  name = {}\n  scheduler = {}\n  enable = {}",
                tstr(&g.name),
                tstr(g.scheduler.name()),
                yes(g.name == s.enabled_group)
            );
            for o in g.options.non_default() {
                let _ = writeln!(t, "  {} = {}", o.toml_key, o.toml);
            }
            if let Some(check) = &g.check {
                let _ = writeln!(t, "  check = {}", toml_check(check));
            }
            if let Some(agent) = &g.agent {
                let _ = writeln!(t, "  agent = {}", toml_agent(agent));
            }
            t.push_str("  hosts = [\n");
            for h in &g.hosts {
                let _ = writeln!(
                    t,
                    "    {{ name = {}, ip = {}, weight = {}{} }},",
                    tstr(&h.name),
                    tstr(&h.address.to_string()),
                    h.weight,
                    toml_inline_options(&h.options.non_default())
                );
            }
            t.push_str("  ]\n");
        }
        t.push('\n');
    }
    if let Some(admin) = &config.admin {
        // The header keeps an admin section with nothing in it from vanishing.
        t.push_str("[admin]\n\n");
        if let Some(w) = &admin.web {
            let _ = writeln!(
                t,
                "[admin.web]\nlisten = {}\nenable = {}\nsecure = {}\nrefresh = {}",
                tstr(&w.listen.to_string()),
                yes(w.enable),
                yes(w.secure),
                seconds(w.refresh)
            );
            if w.metrics_public {
                t.push_str("metrics_public = true\n");
            }
            if !w.allowed_hosts.is_empty() {
                let names: Vec<String> = w.allowed_hosts.iter().map(|n| tstr(n)).collect();
                let _ = writeln!(t, "allowed_hosts = [{}]", names.join(", "));
            }
            if w.changes_require_post {
                t.push_str("changes_require_post = true\n");
            }
            for (name, path) in [("cert", &w.cert), ("key", &w.key)] {
                if let Some(p) = path {
                    let _ = writeln!(t, "{name} = {}", tstr(&path_text(p)));
                }
            }
            t.push('\n');
        }
        if let Some(s) = &admin.ssh {
            let _ = writeln!(
                t,
                "[admin.ssh]\nlisten = {}\nenable = {}",
                tstr(&s.listen.to_string()),
                yes(s.enable)
            );
            for (name, path) in [
                ("authorized_keys", &s.authorized_keys),
                ("host_key", &s.host_key),
            ] {
                if let Some(p) = path {
                    let _ = writeln!(t, "{name} = {}", tstr(&path_text(p)));
                }
            }
            if s.script_timeout != DEFAULT_SCRIPT_TIMEOUT {
                let _ = writeln!(t, "script_timeout = {}", seconds(s.script_timeout));
            }
            t.push('\n');
        }
        for u in &admin.users {
            let _ = writeln!(
                t,
                "[[admin.user]]\nname = {}\npassword = {}\naccess = {}\n",
                tstr(&u.name),
                tstr(&u.password_hash),
                tstr(u.access.name())
            );
        }
    }
    let m = &config.manager;
    t.push_str("[manager]\n");
    for (key, task) in [
        ("host_check", m.host_check),
        ("config_check", m.config_check),
        ("heartbeat", m.heartbeat),
    ] {
        let _ = writeln!(
            t,
            "{key} = {{ interval = {}, enable = {} }}",
            seconds(task.interval),
            yes(task.enable)
        );
    }
    if !config.logging.is_empty() {
        t.push_str("\n[logging]\n");
        for (key, value) in logging_values(&config.logging) {
            let _ = writeln!(t, "{key} = {}", tstr(&value));
        }
    }
    if let Some(c) = &config.control {
        let _ = writeln!(t, "\n[control]\nsocket = {}", tstr(&path_text(&c.socket)));
    }
    if let Some(c) = &config.cluster {
        let _ = writeln!(
            t,
            "\n[cluster]\netcd = {}\nprefix = {}\nname = {}",
            tstr(&c.endpoints.join(",")),
            tstr(&c.prefix),
            tstr(&c.name)
        );
    }
    let resolver = config.resolver.non_default();
    if !resolver.is_empty() {
        t.push_str("\n[resolver]\n");
        for o in resolver {
            let _ = writeln!(t, "{} = {}", o.toml_key, o.toml);
        }
    }
    if let Some(acme) = &config.acme {
        t.push_str("\n[acme]\n");
        for o in acme.non_default() {
            let _ = writeln!(t, "{} = {}", o.toml_key, o.toml);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_plain_decimals() {
        assert_eq!(seconds(Duration::from_secs(10)), "10");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5");
        assert_eq!(seconds(Duration::new(1, 1)), "1.000000001");
    }

    #[test]
    fn escaping() {
        assert_eq!(attr("a<b>&\"'\n"), "a&lt;b&gt;&amp;&quot;&apos;&#10;");
        assert_eq!(tstr("a\"\\\n\u{1}"), "\"a\\\"\\\\\\n\\u0001\"");
    }
}
