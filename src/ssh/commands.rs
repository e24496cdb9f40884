//! The console's command language: one table of commands ([`COMMANDS`]) drives
//! parsing, `help`, tab completion and the read-only rule; each change becomes the
//! same [`Command`] the web admin applies (see `admin/legacy.rs` for the mapping
//! of txLoadBalancer's calls, which this follows word for word).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::SshSettings;
use crate::admin::Principal;
use crate::config::{
    Access, Config, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SCHEDULER, GroupConfig, HostConfig, Listener,
    RawValue, ServiceConfig, parse_access, parse_host_address, parse_listen_addr, parse_seconds,
    parse_weight,
};
use crate::control::{Command, ControlError};
use crate::scheduler::SchedulerKind;
use crate::state::HostHealth;
use crate::{BalancerHandle, HostStatsEntry, Stats};

/// Default refresh period of `watch stats`.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Shortest refresh period `watch stats` accepts.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// What kind of value an argument is: for completion and usage lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A service name.
    Service,
    /// A group name of the service given before it.
    Group,
    /// A host name of the group (or, without a group, of the service) given before.
    Host,
    /// A scheduler name.
    Scheduler,
    /// A listener of the service given before it.
    Listener,
    /// An admin user name.
    User,
    /// `full` or `readonly`.
    AccessLevel,
    /// Anything else (an address, a number).
    Value,
}

/// One console command: its words, arguments, flags and whether it changes the
/// balancer (read-only users may run only those that do not).
#[derive(Debug)]
pub struct Spec {
    /// The command's words, e.g. `["host", "add"]`.
    pub words: &'static [&'static str],
    /// Positional arguments: name shown in usage and kind.
    pub args: &'static [(&'static str, Arg)],
    /// How many of `args` are required (the rest are optional, in order).
    pub required: usize,
    /// Accepted flags, e.g. `--json`.
    pub flags: &'static [&'static str],
    /// Whether the command changes the running balancer.
    pub changes: bool,
    /// One line for `help`.
    pub summary: &'static str,
    /// More for `help COMMAND` (may be empty).
    pub detail: &'static str,
}

impl Spec {
    /// The command's name, e.g. `host add`.
    pub fn name(&self) -> String {
        self.words.join(" ")
    }

    /// `host add SERVICE GROUP NAME ADDRESS [WEIGHT] [--json]`.
    pub fn usage(&self) -> String {
        let mut u = self.name();
        for (i, (name, _)) in self.args.iter().enumerate() {
            if i < self.required {
                let _ = write!(u, " {name}");
            } else {
                let _ = write!(u, " [{name}]");
            }
        }
        for flag in self.flags {
            let _ = write!(u, " [{flag}]");
        }
        u
    }

    /// The one line of `help`: the summary, and the default of an optional
    /// scheduler argument, taken from the parser's own default.
    pub fn summary_line(&self) -> String {
        let mut line = self.summary.to_string();
        for (i, (name, kind)) in self.args.iter().enumerate() {
            if *kind == Scheduler && i >= self.required {
                let _ = write!(line, " ({name} default {DEFAULT_SCHEDULER})");
            }
        }
        line
    }

    /// What `help COMMAND` says of arguments whose values come from a table:
    /// every scheduler name the parser accepts.
    pub fn arg_notes(&self) -> Vec<String> {
        self.args
            .iter()
            .filter(|(_, kind)| *kind == Scheduler)
            .map(|(name, _)| format!("{name}: one of {}", scheduler_names().join(", ")))
            .collect()
    }
}

/// The canonical scheduler names, from [`SchedulerKind::ALL`] (the table the
/// parser and completion use).
fn scheduler_names() -> Vec<&'static str> {
    SchedulerKind::ALL.iter().map(|k| k.name()).collect()
}

use Arg::*;

const SVC: (&str, Arg) = ("SERVICE", Service);
const GRP: (&str, Arg) = ("GROUP", Group);
const HST: (&str, Arg) = ("HOST", Host);
const JSON: &[&str] = &["--json"];

/// Every console command, in `help` order.
pub const COMMANDS: &[Spec] = &[
    Spec {
        words: &["help"],
        args: &[("COMMAND", Value)],
        required: 0,
        flags: &[],
        changes: false,
        summary: "list the commands, or explain one",
        detail: "Exit status of a command run as `ssh … 'COMMAND'`: 0 done, 1 refused \
                 (unknown name, a rule of the model, a failed hook), 2 not understood, \
                 3 not allowed for a read-only user.",
    },
    Spec {
        words: &["show", "services"],
        args: &[],
        required: 0,
        flags: JSON,
        changes: false,
        summary: "services with listeners, enabled group and counters",
        detail: "",
    },
    Spec {
        words: &["show", "stats"],
        args: &[],
        required: 0,
        flags: JSON,
        changes: false,
        summary: "counters of every host (--json: the whole balancer's stats)",
        detail: "",
    },
    Spec {
        words: &["show", "hosts"],
        args: &[SVC, GRP],
        required: 0,
        flags: JSON,
        changes: false,
        summary: "hosts with address, weight, state and why they are bad",
        detail: "",
    },
    Spec {
        words: &["show", "connections"],
        args: &[SVC, HST],
        required: 0,
        flags: JSON,
        changes: false,
        summary: "open client connections, oldest first",
        detail: "",
    },
    Spec {
        words: &["show", "users"],
        args: &[],
        required: 0,
        flags: JSON,
        changes: false,
        summary: "admin users and their access",
        detail: "",
    },
    Spec {
        words: &["show", "config"],
        args: &[],
        required: 0,
        flags: &["--boot", "--toml", "--json"],
        changes: false,
        summary: "the running configuration as XML (or TOML, JSON; --boot: as started)",
        detail: "",
    },
    Spec {
        words: &["show", "diff"],
        args: &[],
        required: 0,
        flags: &[],
        changes: false,
        summary: "what changed since start (boot vs running configuration)",
        detail: "",
    },
    Spec {
        words: &["whoami"],
        args: &[],
        required: 0,
        flags: JSON,
        changes: false,
        summary: "who you are logged in as, and your access",
        detail: "",
    },
    Spec {
        words: &["watch", "stats"],
        args: &[("SECONDS", Value)],
        required: 0,
        flags: &[],
        changes: false,
        summary: "show stats again every SECONDS (default 2) until a key is pressed",
        detail: "",
    },
    Spec {
        words: &["host", "add"],
        args: &[
            SVC,
            GRP,
            ("NAME", Value),
            ("ADDRESS", Value),
            ("WEIGHT", Value),
        ],
        required: 4,
        flags: &[],
        changes: true,
        summary: "add a host (ADDRESS is name-or-ip:port; WEIGHT default 1)",
        detail: "",
    },
    Spec {
        words: &["host", "del"],
        args: &[SVC, GRP, HST],
        required: 3,
        flags: &[],
        changes: true,
        summary: "remove a host; its open connections continue",
        detail: "",
    },
    Spec {
        words: &["host", "down"],
        args: &[SVC, GRP, HST],
        required: 3,
        flags: &[],
        changes: true,
        summary: "take a host out of rotation (admin-down)",
        detail: "",
    },
    Spec {
        words: &["host", "up"],
        args: &[SVC, GRP, HST],
        required: 3,
        flags: &[],
        changes: true,
        summary: "put an admin-down host back in rotation",
        detail: "",
    },
    Spec {
        words: &["host", "retry"],
        args: &[SVC, GRP, HST],
        required: 3,
        flags: &[],
        changes: true,
        summary: "probe a host now; back in rotation if it answers",
        detail: "",
    },
    Spec {
        words: &["host", "drain"],
        args: &[SVC, GRP, HST, ("SECONDS", Value)],
        required: 3,
        flags: &[],
        changes: true,
        summary: "admin-down a host, and close what is still open after SECONDS",
        detail: "",
    },
    Spec {
        words: &["group", "add"],
        args: &[SVC, ("GROUP", Value), ("SCHEDULER", Scheduler)],
        required: 2,
        flags: &[],
        changes: true,
        summary: "add an empty group",
        detail: "",
    },
    Spec {
        words: &["group", "del"],
        args: &[SVC, GRP],
        required: 2,
        flags: &[],
        changes: true,
        summary: "remove a group that is not enabled",
        detail: "",
    },
    Spec {
        words: &["group", "enable"],
        args: &[SVC, GRP],
        required: 2,
        flags: &[],
        changes: true,
        summary: "switch the enabled group; open connections continue",
        detail: "",
    },
    Spec {
        words: &["group", "clear"],
        args: &[SVC, GRP],
        required: 2,
        flags: &[],
        changes: true,
        summary: "remove every host of a group that is not enabled",
        detail: "",
    },
    Spec {
        words: &["scheduler", "set"],
        args: &[SVC, GRP, ("SCHEDULER", Scheduler)],
        required: 3,
        flags: &[],
        changes: true,
        summary: "change a group's scheduler",
        detail: "",
    },
    Spec {
        words: &["listen", "add"],
        args: &[
            SVC,
            ("ADDRESS", Value),
            ("SETTING", Value),
            ("SETTING", Value),
        ],
        required: 2,
        flags: &[],
        changes: true,
        summary: "listen on one more address for a service",
        detail: "SETTING: acceptProxy=true|false or trustedProxies=CIDR,... for this \
                 listener alone (as on <listen>); without, it follows the service.",
    },
    Spec {
        words: &["listen", "del"],
        args: &[SVC, ("ADDRESS", Listener)],
        required: 2,
        flags: &[],
        changes: true,
        summary: "stop listening on an address",
        detail: "",
    },
    Spec {
        words: &["service", "add"],
        args: &[
            ("SERVICE", Value),
            ("LISTEN", Value),
            ("GROUP", Value),
            ("SCHEDULER", Scheduler),
        ],
        required: 2,
        flags: &[],
        changes: true,
        summary: "add a service with one empty group (GROUP default main)",
        detail: "",
    },
    Spec {
        words: &["service", "del"],
        args: &[SVC],
        required: 1,
        flags: &[],
        changes: true,
        summary: "remove a service; its connections continue",
        detail: "",
    },
    Spec {
        words: &["connection", "close"],
        args: &[("ID", Value)],
        required: 1,
        flags: &[],
        changes: true,
        summary: "close one open connection (ids from show connections)",
        detail: "",
    },
    Spec {
        words: &["user", "add"],
        args: &[("NAME", Value), ("ACCESS", AccessLevel)],
        required: 1,
        flags: &[],
        changes: true,
        summary: "add an admin user (asks for the password; ACCESS full or readonly)",
        detail: "Run as `ssh … 'user add NAME'`, the password is the first line of \
                 standard input.",
    },
    Spec {
        words: &["user", "del"],
        args: &[("NAME", User)],
        required: 1,
        flags: &[],
        changes: true,
        summary: "remove an admin user",
        detail: "",
    },
    Spec {
        words: &["config", "save"],
        args: &[],
        required: 0,
        flags: &[],
        changes: true,
        summary: "write the running configuration to its file, keeping comments",
        detail: "",
    },
    Spec {
        words: &["config", "reload"],
        args: &[],
        required: 0,
        flags: &[],
        changes: true,
        summary: "load the configuration file again (like SIGHUP)",
        detail: "",
    },
    Spec {
        words: &["log", "reopen"],
        args: &[],
        required: 0,
        flags: &[],
        changes: true,
        summary: "reopen the log file (after rotation)",
        detail: "",
    },
    Spec {
        words: &["script"],
        args: &[("CODE", Value)],
        required: 0,
        flags: &[],
        changes: false,
        summary: "run a Rhai script whose functions are these commands",
        detail: "Functions: one per command, its words joined by _, taking its \
                 arguments: host_down(\"svc\", \"g\", \"a\"), group_enable(…); \
                 show_stats(), show_hosts(SERVICE) … return maps and arrays; \
                 run(\"any console line\") returns its output. Errors can be caught \
                 with try/catch. Without CODE the script is read from standard \
                 input (exec), or typed until a line with a single . (console). \
                 Example: for h in show_hosts(\"svc\") { if h.health == \"bad\" \
                 { print(host_retry(h.service, h.group, h.name)) } }",
    },
    Spec {
        words: &["exit"],
        args: &[],
        required: 0,
        flags: &[],
        changes: false,
        summary: "leave the console (also quit, Ctrl-D)",
        detail: "",
    },
];

/// Why a console command did not run, and the exit status it gives in exec mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleError {
    /// The line is not a command, or its arguments are wrong.
    #[error("{0}")]
    Usage(String),
    /// The user has read-only access and the command changes the balancer.
    #[error("{0}")]
    Forbidden(String),
    /// The balancer refused (unknown name, a rule of the model, a failed hook).
    #[error("{0}")]
    Refused(String),
}

impl ConsoleError {
    /// Exit status in exec mode: 1 refused, 2 usage, 3 forbidden.
    pub fn exit_status(&self) -> u32 {
        match self {
            ConsoleError::Refused(_) => 1,
            ConsoleError::Usage(_) => 2,
            ConsoleError::Forbidden(_) => 3,
        }
    }
}

impl From<ControlError> for ConsoleError {
    fn from(e: ControlError) -> Self {
        ConsoleError::Refused(e.to_string())
    }
}

/// A command line parsed against [`COMMANDS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The command.
    pub spec: &'static Spec,
    /// Its positional arguments (required ones all present).
    pub args: Vec<String>,
    /// Flags given, each one of the spec's.
    pub flags: Vec<&'static str>,
}

impl Parsed {
    fn flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }

    /// Argument `i`, which parsing guaranteed when it is required.
    fn req(&self, i: usize) -> &str {
        self.arg(i).unwrap_or_default()
    }
}

impl PartialEq for Spec {
    fn eq(&self, other: &Spec) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for Spec {}

/// What running a command asks of the session besides printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Print this (may be empty).
    Text(String),
    /// Show stats every period until a key is pressed.
    Watch(Duration),
    /// Ask for a password, then add the user (see [`add_user`]).
    AddUser {
        /// Login name.
        name: String,
        /// Access level.
        access: Access,
    },
    /// Run a script: this code, or code read from the client.
    Script(Option<String>),
    /// Leave the console.
    Exit,
}

/// Splits a line into commands (at `;` outside quotes) and words (at blanks
/// outside quotes; `"…"` and `'…'` quote, `\` escapes the next character).
pub fn split_line(line: &str) -> Result<Vec<Vec<String>>, ConsoleError> {
    let mut commands = Vec::new();
    let mut current = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                let next = chars
                    .next()
                    .ok_or_else(|| ConsoleError::Usage("line ends with \\".into()))?;
                word.get_or_insert_with(String::new).push(next);
            }
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, ';') => {
                current.extend(word.take());
                commands.push(std::mem::take(&mut current));
            }
            (None, c) if c.is_whitespace() => current.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err(ConsoleError::Usage("unterminated quote".into()));
    }
    current.extend(word);
    commands.push(current);
    commands.retain(|c| !c.is_empty());
    Ok(commands)
}

/// The command whose words start `words`, longest first (`exit`/`quit` alias).
fn find_spec(words: &[String]) -> Option<&'static Spec> {
    let first = words.first()?;
    if first == "quit" {
        return COMMANDS.iter().find(|s| s.words == ["exit"]);
    }
    COMMANDS
        .iter()
        .filter(|s| s.words.len() <= words.len() && s.words.iter().zip(words).all(|(a, b)| a == b))
        .max_by_key(|s| s.words.len())
}

/// Parses the words of one command.
pub fn parse(words: &[String]) -> Result<Parsed, ConsoleError> {
    let Some(spec) = find_spec(words) else {
        let first = words.first().map(String::as_str).unwrap_or_default();
        let known: Vec<&str> = COMMANDS
            .iter()
            .filter(|s| s.words[0] == first)
            .filter_map(|s| s.words.get(1).copied())
            .collect();
        return Err(ConsoleError::Usage(if known.is_empty() {
            format!("unknown command {first:?}; try help")
        } else {
            format!("{first} what? one of: {}", known.join(", "))
        }));
    };
    let mut args = Vec::new();
    let mut flags = Vec::new();
    for word in &words[spec.words.len()..] {
        if word.starts_with("--") {
            let flag = spec.flags.iter().find(|f| **f == word).ok_or_else(|| {
                ConsoleError::Usage(format!("{}: unknown flag {word}", spec.name()))
            })?;
            flags.push(*flag);
        } else {
            args.push(word.clone());
        }
    }
    if spec.words == ["help"] && args.len() > 1 {
        args = vec![args.join(" ")];
    }
    if args.len() < spec.required || args.len() > spec.args.len() {
        return Err(ConsoleError::Usage(format!("usage: {}", spec.usage())));
    }
    Ok(Parsed { spec, args, flags })
}

/// What a console command runs with.
#[derive(Clone)]
pub struct Context {
    /// The balancer.
    pub handle: BalancerHandle,
    /// Hooks (save, log reopen) and names.
    pub settings: std::sync::Arc<SshSettings>,
    /// Who is logged in.
    pub principal: Principal,
    /// The server's running scripts (at most a few at once).
    pub(crate) scripts: std::sync::Arc<super::script::Scripts>,
    /// The server's sessions: a running script holds a place among them.
    pub(crate) session: tokio_util::task::TaskTracker,
}

/// Runs one parsed command.
pub async fn run(ctx: &Context, p: &Parsed) -> Result<Outcome, ConsoleError> {
    if p.spec.changes && ctx.principal.access != Access::Full {
        return Err(ConsoleError::Forbidden(format!(
            "{}: user {:?} has read-only access",
            p.spec.name(),
            ctx.principal.name
        )));
    }
    if p.spec.changes {
        tracing::info!(user = %ctx.principal.name, command = %p.spec.name(), args = ?p.args, "ssh console change");
    }
    let h = &ctx.handle;
    let json = p.flag("--json");
    let text = |s: String| Ok(Outcome::Text(s));
    let name = p.spec.name();
    match name.as_str() {
        "help" => text(help(p.arg(0))),
        "exit" => Ok(Outcome::Exit),
        "script" => Ok(Outcome::Script(p.arg(0).map(String::from))),
        "whoami" => {
            let access = ctx.principal.access.name();
            if json {
                text(to_json(&serde_json::json!({
                    "name": ctx.principal.name,
                    "access": access,
                })))
            } else {
                text(format!("{} ({access} access)\n", ctx.principal.name))
            }
        }
        "show services" => {
            let stats = h.stats();
            if json {
                return text(to_json(&stats.services));
            }
            text(services_table(&stats))
        }
        "show stats" => {
            let stats = h.stats();
            if json {
                return text(to_json(&stats));
            }
            text(stats_table(&stats))
        }
        "show hosts" => {
            let stats = h.stats();
            if let Some(service) = p.arg(0) {
                let s = stats
                    .services
                    .iter()
                    .find(|s| s.name == service)
                    .ok_or_else(|| ControlError::UnknownService(service.into()))?;
                if let Some(group) = p.arg(1)
                    && !s.groups.iter().any(|g| g.name == group)
                {
                    return Err(ControlError::UnknownGroup {
                        service: service.into(),
                        group: group.into(),
                    }
                    .into());
                }
            }
            let rows = host_rows(&stats, p.arg(0), p.arg(1));
            if json {
                return text(to_json(&rows));
            }
            text(hosts_table(&rows))
        }
        "show connections" => {
            let list = h.connections(p.arg(0), p.arg(1));
            if json {
                return text(to_json(&list));
            }
            text(connections_table(&list))
        }
        "show users" => {
            let users: Vec<serde_json::Value> = h
                .config()
                .admin
                .map(|a| a.users)
                .unwrap_or_default()
                .iter()
                .map(|u| serde_json::json!({"name": u.name, "access": u.access.name()}))
                .collect();
            if json {
                return text(to_json(&users));
            }
            let rows = users
                .iter()
                .map(|u| {
                    vec![
                        u["name"].as_str().unwrap_or_default().to_string(),
                        u["access"].as_str().unwrap_or_default().to_string(),
                    ]
                })
                .collect();
            text(table(&["USER", "ACCESS"], rows))
        }
        "show config" => {
            let config = if p.flag("--boot") {
                (*h.boot_config()).clone()
            } else {
                h.config()
            };
            let config = crate::admin::readable_config(ctx.principal.access, config);
            if json {
                text(config_json(&config)?)
            } else if p.flag("--toml") {
                text(config.to_toml())
            } else {
                text(config.to_xml())
            }
        }
        "show diff" => {
            let diff = crate::config::writeback::unified_diff(
                "boot",
                &h.boot_config().to_xml(),
                "running",
                &h.config().to_xml(),
            );
            if diff.is_empty() {
                text("no change since start\n".into())
            } else {
                text(crate::admin::readable_text(ctx.principal.access, diff))
            }
        }
        "watch stats" => {
            let period = match p.arg(0) {
                None => DEFAULT_WATCH_INTERVAL,
                Some(s) => parse_seconds(s)
                    .map_err(|r| ConsoleError::Usage(format!("SECONDS: {r}")))?
                    .max(MIN_WATCH_INTERVAL),
            };
            Ok(Outcome::Watch(period))
        }
        "host add" => {
            let (service, group, host) = (p.req(0), p.req(1), p.req(2));
            let address = parse_host_address(p.req(3)).map_err(|r| usage("ADDRESS", r))?;
            let weight = p
                .arg(4)
                .map(parse_weight)
                .transpose()
                .map_err(|r| usage("WEIGHT", r))?
                .unwrap_or(1);
            h.apply(Command::AddHost {
                service: service.into(),
                group: group.into(),
                host: HostConfig {
                    name: host.into(),
                    address: address.clone(),
                    weight,
                    options: Default::default(),
                },
            })
            .await?;
            text(format!(
                "OK host {host} ({address}, weight {weight}) added to group {group} of service {service}\n"
            ))
        }
        "host del" => {
            let (service, group, host) = (p.req(0), p.req(1), p.req(2));
            h.apply(Command::RemoveHost {
                service: service.into(),
                group: group.into(),
                host: host.into(),
            })
            .await?;
            text(format!(
                "OK host {host} removed from group {group} of service {service}\n"
            ))
        }
        "host down" | "host up" => {
            let down = name == "host down";
            let (service, group, host) = (p.req(0), p.req(1), p.req(2));
            h.apply(Command::SetAdminDown {
                service: service.into(),
                group: group.into(),
                host: host.into(),
                down,
            })
            .await?;
            text(if down {
                format!("OK host {host} is admin-down\n")
            } else {
                format!("OK host {host} is admin-up\n")
            })
        }
        "host retry" => {
            let (service, group, host) = (p.req(0), p.req(1), p.req(2));
            if h.retry_host(service, group, host).await? {
                text(format!("OK host {host} answered and is in rotation\n"))
            } else {
                let reason = h
                    .stats()
                    .host(service, group, host)
                    .and_then(|e| e.stats.bad.clone())
                    .map(|b| b.reason)
                    .unwrap_or_default();
                text(format!(
                    "OK host {host} did not answer and stays bad: {reason}\n"
                ))
            }
        }
        "host drain" => {
            let (service, group, host) = (p.req(0), p.req(1), p.req(2));
            let deadline = p
                .arg(3)
                .map(parse_seconds)
                .transpose()
                .map_err(|r| usage("SECONDS", r))?;
            h.drain_host(service, group, host, deadline).await?;
            let open = h
                .stats()
                .host(service, group, host)
                .map_or(0, |e| e.stats.open);
            text(match deadline {
                None => format!("OK host {host} draining ({open} open)\n"),
                Some(d) => format!(
                    "OK host {host} draining ({open} open), the rest closed after {} s\n",
                    d.as_secs_f64()
                ),
            })
        }
        "group add" => {
            let (service, group) = (p.req(0), p.req(1));
            let scheduler = scheduler_arg(p.arg(2))?;
            h.apply(Command::AddGroup {
                service: service.into(),
                group: GroupConfig::new(group, scheduler, Vec::new()),
            })
            .await?;
            text(format!(
                "OK group {group} ({scheduler}) added to service {service}\n"
            ))
        }
        "group del" => {
            let (service, group) = (p.req(0), p.req(1));
            h.apply(Command::RemoveGroup {
                service: service.into(),
                group: group.into(),
            })
            .await?;
            text(format!("OK group {group} removed from service {service}\n"))
        }
        "group enable" => {
            let (service, group) = (p.req(0), p.req(1));
            h.apply(Command::EnableGroup {
                service: service.into(),
                group: group.into(),
            })
            .await?;
            text(format!("OK group {group} of service {service} enabled\n"))
        }
        "group clear" => {
            let (service, group) = (p.req(0), p.req(1));
            h.apply(Command::RemoveAllHosts {
                service: service.into(),
                group: group.into(),
            })
            .await?;
            text(format!(
                "OK every host removed from group {group} of service {service}\n"
            ))
        }
        "scheduler set" => {
            let (service, group) = (p.req(0), p.req(1));
            let scheduler = scheduler_arg(Some(p.req(2)))?;
            h.apply(Command::SetScheduler {
                service: service.into(),
                group: group.into(),
                scheduler,
            })
            .await?;
            text(format!(
                "OK group {group} of service {service} now uses scheduler {scheduler}\n"
            ))
        }
        "listen add" => {
            let service = p.req(0);
            let listen = parse_listen_addr(p.req(1)).map_err(|r| usage("ADDRESS", r))?;
            let mut listener = Listener::new(listen.clone());
            for setting in [p.arg(2), p.arg(3)].into_iter().flatten() {
                let (key, value) = setting
                    .split_once('=')
                    .ok_or_else(|| usage("SETTING", "expected NAME=VALUE"))?;
                let known = listener
                    .options
                    .set(key, &RawValue::Text(value.into()))
                    .map_err(|why| usage("SETTING", why))?;
                if !known {
                    return Err(usage(
                        "SETTING",
                        format!("unknown setting {key:?} (expected acceptProxy or trustedProxies)"),
                    ));
                }
            }
            h.apply(Command::AddListener {
                service: service.into(),
                listen: listener,
            })
            .await?;
            let bound = h
                .local_addr(service, Some(&listen))
                .map_or_else(|| listen.to_string(), |a| a.to_string());
            text(format!(
                "OK service {service} now also listens on {bound}\n"
            ))
        }
        "listen del" => {
            let service = p.req(0);
            let listen = parse_listen_addr(p.req(1)).map_err(|r| usage("ADDRESS", r))?;
            h.apply(Command::RemoveListener {
                service: service.into(),
                listen: listen.clone(),
            })
            .await?;
            text(format!(
                "OK service {service} no longer listens on {listen}\n"
            ))
        }
        "service add" => {
            let service = p.req(0);
            let listen = parse_listen_addr(p.req(1)).map_err(|r| usage("LISTEN", r))?;
            let group = p.arg(2).unwrap_or("main");
            let scheduler = scheduler_arg(p.arg(3))?;
            h.apply(Command::AddService(Box::new(ServiceConfig {
                name: service.into(),
                listeners: vec![listen.clone().into()],
                groups: vec![GroupConfig::new(group, scheduler, Vec::new())],
                enabled_group: group.into(),
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                options: Default::default(),
            })))
            .await?;
            let bound = h
                .local_addr(service, Some(&listen))
                .map_or_else(|| listen.to_string(), |a| a.to_string());
            text(format!(
                "OK service {service} listening on {bound}, group {group} enabled\n"
            ))
        }
        "service del" => {
            let service = p.req(0);
            h.apply(Command::RemoveService {
                service: service.into(),
            })
            .await?;
            text(format!("OK service {service} removed\n"))
        }
        "connection close" => {
            let id: u64 = p
                .req(0)
                .parse()
                .map_err(|_| usage("ID", "expected a connection id (a number)"))?;
            if h.close_connection(id) {
                text(format!("OK connection {id} closing\n"))
            } else {
                Err(ConsoleError::Refused(format!("no open connection {id}")))
            }
        }
        "user add" => {
            let access = p
                .arg(1)
                .map(parse_access)
                .transpose()
                .map_err(|r| usage("ACCESS", r))?
                .unwrap_or(Access::Full);
            let name = p.req(0).to_string();
            if h.config()
                .admin
                .is_some_and(|a| a.users.iter().any(|u| u.name == name))
            {
                return Err(ControlError::DuplicateUser(name).into());
            }
            Ok(Outcome::AddUser { name, access })
        }
        "user del" => {
            let user = p.req(0);
            h.apply(Command::RemoveUser { name: user.into() }).await?;
            text(format!("OK user {user} removed\n"))
        }
        "config save" => {
            let Some(save) = ctx.settings.save_config.clone() else {
                return Err(ConsoleError::Refused(
                    "saving the configuration is not set up for this server".into(),
                ));
            };
            let running = h.config();
            let message = tokio::task::spawn_blocking(move || save(&running))
                .await
                .map_err(|_| ConsoleError::Refused("saving the configuration failed".into()))?
                .map_err(|reason| {
                    ConsoleError::Refused(format!("configuration not saved: {reason}"))
                })?;
            text(format!("OK {message}\n"))
        }
        "config reload" => {
            // The one reload (SIGHUP's): the admin plane follows, the outcome is
            // recorded for the admin pages, a write-back conflict resolved.
            let changes = h.reload().await.map_err(|e| match e {
                crate::reload::ReloadError::NoFile => ConsoleError::Refused(e.to_string()),
                e => ConsoleError::Refused(format!("reload refused: {e}")),
            })?;
            let path = h.config_file().map(|f| f.path().display().to_string());
            text(format!(
                "OK configuration reloaded from {}: {changes}\n",
                path.unwrap_or_default()
            ))
        }
        "log reopen" => {
            let Some(reopen) = ctx.settings.reopen_log.clone() else {
                return text("OK no log file: logging goes to stderr\n".into());
            };
            tokio::task::spawn_blocking(move || reopen())
                .await
                .map_err(|_| ConsoleError::Refused("reopening the log file failed".into()))?
                .map_err(|error| {
                    tracing::error!(%error, "reopening the log file failed");
                    ConsoleError::Refused("reopening the log file failed".into())
                })?;
            tracing::info!("log file reopened");
            text("OK log file reopened\n".into())
        }
        other => Err(ConsoleError::Usage(format!("unknown command {other:?}"))),
    }
}

/// Hashes `password` and adds the user (the second half of `user add`).
pub async fn add_user(
    ctx: &Context,
    name: &str,
    access: Access,
    password: String,
) -> Result<String, ConsoleError> {
    if password.is_empty() {
        return Err(ConsoleError::Refused(
            "empty password: user not added".into(),
        ));
    }
    let password_hash = tokio::task::spawn_blocking(move || crate::admin::hash_password(&password))
        .await
        .map_err(|_| ConsoleError::Refused("password hashing failed".into()))?
        .map_err(|e| ConsoleError::Refused(format!("{e}: user not added")))?;
    ctx.handle
        .apply(Command::AddUser(crate::config::UserConfig {
            name: name.to_string(),
            password_hash,
            access,
        }))
        .await?;
    Ok(format!(
        "OK user {name} added with {} access\n",
        access.name()
    ))
}

fn usage(arg: &str, reason: impl std::fmt::Display) -> ConsoleError {
    ConsoleError::Usage(format!("{arg}: {reason}"))
}

fn scheduler_arg(arg: Option<&str>) -> Result<SchedulerKind, ConsoleError> {
    match arg {
        None => Ok(DEFAULT_SCHEDULER),
        Some(s) => s.parse().map_err(|e| usage("SCHEDULER", e)),
    }
}

fn to_json(value: &impl Serialize) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    s.push('\n');
    s
}

/// The configuration as JSON: its TOML form (the model's one tree rendering)
/// converted, so the JSON has the TOML file's keys.
fn config_json(config: &Config) -> Result<String, ConsoleError> {
    let value: toml::Value = toml::from_str(&config.to_toml())
        .map_err(|e| ConsoleError::Refused(format!("configuration as JSON: {e}")))?;
    Ok(to_json(&value))
}

/// `help` or `help COMMAND…`.
pub fn help(topic: Option<&str>) -> String {
    let mut t = String::new();
    if let Some(topic) = topic {
        let specs: Vec<&Spec> = COMMANDS
            .iter()
            .filter(|s| s.name() == topic || s.words[0] == topic)
            .collect();
        if specs.is_empty() {
            return format!("no command {topic:?}; try help\n");
        }
        for s in specs {
            let _ = writeln!(t, "{}\n    {}", s.usage(), s.summary_line());
            for note in s.arg_notes() {
                let _ = writeln!(t, "    {note}");
            }
            if !s.detail.is_empty() {
                let _ = writeln!(t, "    {}", s.detail);
            }
            if s.changes {
                let _ = writeln!(t, "    (changes the balancer: not for read-only users)");
            }
            if s.words == ["script"] {
                let _ = writeln!(
                    t,
                    "    Functions: {}",
                    super::script::function_names().join(", ")
                );
            }
        }
        return t;
    }
    let rows = COMMANDS
        .iter()
        .map(|s| vec![s.usage(), s.summary_line()])
        .collect();
    t.push_str(&table(&["COMMAND", "WHAT IT DOES"], rows));
    t.push_str(
        "Names complete with Tab. Quote words with spaces; separate commands with ;.\n\
         help COMMAND says more. --json prints for scripts.\n",
    );
    t
}

/// Completion candidates for the word being typed at the end of `before`.
pub fn complete(config: &Config, before: &str) -> crate::ssh::editor::Completion {
    let ends_blank = before.is_empty() || before.ends_with(char::is_whitespace);
    // After the last `;`, only the current command counts.
    let current = before.rsplit(';').next().unwrap_or_default();
    let mut words: Vec<String> = current.split_whitespace().map(String::from).collect();
    let typed = if ends_blank {
        String::new()
    } else {
        words.pop().unwrap_or_default()
    };
    let start = before.chars().count() - typed.chars().count();
    let mut candidates: Vec<String> = Vec::new();
    let help = words.first().is_some_and(|w| w == "help");
    let command_words = if help { &words[1..] } else { &words[..] };
    // The next word of a command name.
    for spec in COMMANDS {
        if spec.words.len() > command_words.len()
            && spec.words.iter().zip(command_words).all(|(a, b)| a == b)
        {
            candidates.push(spec.words[command_words.len()].to_string());
        }
    }
    if !help && let Some(spec) = find_spec(&words) {
        if typed.starts_with('-') {
            candidates.extend(spec.flags.iter().map(|f| f.to_string()));
        } else {
            let args: Vec<&String> = words[spec.words.len()..]
                .iter()
                .filter(|w| !w.starts_with("--"))
                .collect();
            if let Some((_, kind)) = spec.args.get(args.len()) {
                let service = spec
                    .args
                    .iter()
                    .zip(&args)
                    .find(|((_, k), _)| *k == Service)
                    .map(|(_, v)| v.as_str());
                let group = spec
                    .args
                    .iter()
                    .zip(&args)
                    .find(|((_, k), _)| *k == Group)
                    .map(|(_, v)| v.as_str());
                candidates.extend(values(config, *kind, service, group));
            }
        }
    }
    candidates.sort();
    candidates.dedup();
    candidates.retain(|c| c.starts_with(&typed));
    crate::ssh::editor::Completion { start, candidates }
}

/// Names an argument of `kind` may take in `config`.
fn values(config: &Config, kind: Arg, service: Option<&str>, group: Option<&str>) -> Vec<String> {
    let svc = || {
        config
            .services
            .iter()
            .find(|s| Some(s.name.as_str()) == service)
    };
    match kind {
        Service => config.services.iter().map(|s| s.name.clone()).collect(),
        Group => svc()
            .map(|s| s.groups.iter().map(|g| g.name.clone()).collect())
            .unwrap_or_default(),
        Host => svc()
            .map(|s| {
                s.groups
                    .iter()
                    .filter(|g| group.is_none_or(|name| g.name == name))
                    .flat_map(|g| g.hosts.iter().map(|h| h.name.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        Listener => svc()
            .map(|s| s.listeners.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        Scheduler => scheduler_names().into_iter().map(String::from).collect(),
        User => config
            .admin
            .as_ref()
            .map(|a| a.users.iter().map(|u| u.name.clone()).collect())
            .unwrap_or_default(),
        AccessLevel => vec!["full".into(), "readonly".into()],
        Value => Vec::new(),
    }
}

/// An aligned table: columns as wide as their widest cell, numbers right-aligned.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let n = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    let mut numeric = vec![!rows.is_empty(); n];
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(n) {
            widths[i] = widths[i].max(cell.chars().count());
            if cell.parse::<f64>().is_err() {
                numeric[i] = false;
            }
        }
    }
    let mut t = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                l.push_str("  ");
            }
            if numeric[i] {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                if i + 1 < cells.len() {
                    l.push_str(&" ".repeat(pad));
                }
            }
        }
        t.push_str(l.trim_end());
        t.push('\n');
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    t
}

fn health(h: HostHealth) -> &'static str {
    match h {
        HostHealth::Up => "up",
        HostHealth::Bad => "bad",
        HostHealth::AdminDown => "admin-down",
    }
}

fn services_table(stats: &Stats) -> String {
    let rows = stats
        .services
        .iter()
        .map(|s| {
            let hosts: Vec<&HostStatsEntry> = s
                .groups
                .iter()
                .filter(|g| g.enabled)
                .flat_map(|g| &g.hosts)
                .collect();
            let up = hosts
                .iter()
                .filter(|h| h.stats.health == HostHealth::Up)
                .count();
            let open: u64 = s
                .groups
                .iter()
                .flat_map(|g| &g.hosts)
                .map(|h| h.stats.open)
                .sum();
            let listeners: Vec<String> = s.listeners.iter().map(|l| l.local.to_string()).collect();
            vec![
                s.name.clone(),
                listeners.join(","),
                match (&s.serving_group, s.on_backup) {
                    (Some(backup), true) => format!("{} (on backup {backup})", s.enabled_group),
                    _ => s.enabled_group.clone(),
                },
                s.groups.len().to_string(),
                format!("{up}/{}", hosts.len()),
                open.to_string(),
                s.counters.accepted.to_string(),
                s.counters.failovers.to_string(),
                s.counters.no_host.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "LISTENING",
            "ENABLED",
            "GROUPS",
            "UP",
            "OPEN",
            "ACCEPTED",
            "FAILOVERS",
            "NO-HOST",
        ],
        rows,
    )
}

fn stats_table(stats: &Stats) -> String {
    let mut rows = Vec::new();
    for s in &stats.services {
        for g in &s.groups {
            let group = if g.enabled {
                format!("{}*", g.name)
            } else {
                g.name.clone()
            };
            for (h, draining) in g
                .hosts
                .iter()
                .map(|h| (h, false))
                .chain(g.draining.iter().map(|h| (h, true)))
            {
                let v = &h.stats;
                let state = if draining {
                    "removed"
                } else {
                    health(v.health)
                };
                rows.push(vec![
                    s.name.clone(),
                    group.clone(),
                    h.name.clone(),
                    state.to_string(),
                    v.open.to_string(),
                    v.total.to_string(),
                    v.failures.to_string(),
                    v.picks.to_string(),
                    v.bytes_in.to_string(),
                    v.bytes_out.to_string(),
                ]);
            }
        }
    }
    let mut t = table(
        &[
            "SERVICE",
            "GROUP",
            "HOST",
            "STATE",
            "OPEN",
            "TOTAL",
            "FAILED",
            "PICKS",
            "BYTES-IN",
            "BYTES-OUT",
        ],
        rows,
    );
    t.push_str("(* the enabled group)\n");
    t
}

/// One host in `show hosts --json`.
#[derive(Debug, Serialize)]
struct HostRow<'a> {
    service: &'a str,
    group: &'a str,
    /// Whether the host's group is the enabled one.
    enabled_group: bool,
    #[serde(flatten)]
    host: &'a HostStatsEntry,
}

fn host_rows<'a>(stats: &'a Stats, service: Option<&str>, group: Option<&str>) -> Vec<HostRow<'a>> {
    let mut rows = Vec::new();
    for s in stats
        .services
        .iter()
        .filter(|s| service.is_none_or(|n| s.name == n))
    {
        for g in s
            .groups
            .iter()
            .filter(|g| group.is_none_or(|n| g.name == n))
        {
            for h in &g.hosts {
                rows.push(HostRow {
                    service: &s.name,
                    group: &g.name,
                    enabled_group: g.enabled,
                    host: h,
                });
            }
        }
    }
    rows
}

fn hosts_table(rows: &[HostRow<'_>]) -> String {
    let now = SystemTime::now();
    let rows = rows
        .iter()
        .map(|r| {
            let v = &r.host.stats;
            let why = v.bad.as_ref().map_or_else(String::new, |b| {
                let ago = now.duration_since(b.since).map_or(0, |d| d.as_secs());
                format!("{} ({ago} s ago)", b.reason)
            });
            let group = if r.enabled_group {
                format!("{}*", r.group)
            } else {
                r.group.to_string()
            };
            vec![
                r.service.to_string(),
                group,
                r.host.name.clone(),
                r.host.address.clone(),
                r.host.weight.to_string(),
                health(v.health).to_string(),
                v.open.to_string(),
                why,
            ]
        })
        .collect();
    table(
        &[
            "SERVICE", "GROUP", "HOST", "ADDRESS", "WEIGHT", "STATE", "OPEN", "WHY",
        ],
        rows,
    )
}

fn connections_table(list: &[crate::state::ConnectionInfo]) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let rows = list
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.service.clone(),
                c.group.clone(),
                c.host.clone(),
                c.client.to_string(),
                format!("{:.0}", (now - c.since).max(0.0)),
                c.bytes_in.to_string(),
                c.bytes_out.to_string(),
                if c.parked { "parked" } else { "" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "SERVICE",
            "GROUP",
            "HOST",
            "CLIENT",
            "AGE-S",
            "BYTES-IN",
            "BYTES-OUT",
            "IDLE",
        ],
        rows,
    )
}

/// `show stats` for `watch stats`: the table under a title line.
pub fn watch_frame(handle: &BalancerHandle, period: Duration) -> String {
    format!(
        "Every {} s: show stats   (press any key to stop)\n\n{}",
        period.as_secs_f64(),
        stats_table(&handle.stats())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_line(line).unwrap().remove(0)
    }

    #[test]
    fn splitting_quotes_escapes_and_semicolons() {
        assert_eq!(
            split_line("show stats --json; host down svc 'my group' a\\ b").unwrap(),
            vec![
                vec!["show", "stats", "--json"],
                vec!["host", "down", "svc", "my group", "a b"]
            ]
        );
        assert_eq!(
            split_line("a \"b;c\" ''").unwrap(),
            vec![vec!["a", "b;c", ""]]
        );
        assert!(split_line("  ;; ").unwrap().is_empty());
        assert!(split_line("a 'b").is_err());
        assert!(split_line("a \\").is_err());
    }

    #[test]
    fn parsing_checks_words_arguments_and_flags() {
        let p = parse(&words("host add svc g h 127.0.0.1:80 3")).unwrap();
        assert_eq!(p.spec.name(), "host add");
        assert_eq!(p.args, vec!["svc", "g", "h", "127.0.0.1:80", "3"]);
        let p = parse(&words("show stats --json")).unwrap();
        assert!(p.flag("--json"));
        assert_eq!(parse(&words("quit")).unwrap().spec.name(), "exit");
        for (line, needle) in [
            ("frobnicate", "unknown command"),
            ("host", "host what? one of: add, del, down"),
            ("host down svc g", "usage: host down SERVICE GROUP HOST"),
            ("host down svc g h extra", "usage:"),
            ("show stats --yaml", "unknown flag --yaml"),
        ] {
            let e = parse(&words(line)).unwrap_err();
            assert!(e.to_string().contains(needle), "{line}: {e}");
            assert_eq!(e.exit_status(), 2);
        }
    }

    #[test]
    fn every_command_has_a_unique_name_and_consistent_arguments() {
        let mut names = std::collections::HashSet::new();
        for s in COMMANDS {
            assert!(names.insert(s.name()), "{}", s.name());
            assert!(s.required <= s.args.len(), "{}", s.name());
            assert!(help(Some(&s.name())).contains(&s.usage()));
        }
        let all = help(None);
        assert!(all.contains("host down SERVICE GROUP HOST"), "{all}");
    }

    /// Help and completion say what the parser does: every scheduler it accepts,
    /// its default, and no hand-written list in a summary that could fall behind.
    #[test]
    fn help_and_completion_follow_the_scheduler_table() {
        let all: Vec<&str> = SchedulerKind::ALL.iter().map(|k| k.name()).collect();
        for spec in COMMANDS {
            for text in [spec.summary, spec.detail] {
                for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
                    assert!(
                        word.parse::<SchedulerKind>().is_err(),
                        "{}: names scheduler {word:?} by hand",
                        spec.name()
                    );
                }
            }
            let Some(at) = spec.args.iter().position(|(_, k)| *k == Scheduler) else {
                continue;
            };
            let help = help(Some(&spec.name()));
            let listed = help
                .lines()
                .find_map(|l| l.trim().strip_prefix("SCHEDULER: one of "))
                .unwrap_or_else(|| panic!("{help}"));
            let listed: Vec<&str> = listed.split(", ").collect();
            assert_eq!(listed, all, "{}", spec.name());
            for name in &listed {
                assert!(scheduler_arg(Some(name)).is_ok(), "{name}");
            }
            let mut line = spec.words.join(" ");
            for _ in 0..at {
                line.push_str(" web");
            }
            line.push(' ');
            assert_eq!(cands(&line).len(), all.len(), "{line}");
            if at >= spec.required {
                let default = scheduler_arg(None).unwrap();
                assert!(
                    spec.summary_line()
                        .ends_with(&format!("(SCHEDULER default {default})")),
                    "{}",
                    spec.summary_line()
                );
            }
        }
        let group_add = COMMANDS.iter().find(|s| s.name() == "group add").unwrap();
        assert!(group_add.summary_line().contains("default roundr"));
    }

    fn sample() -> Config {
        Config::from_xml_str(
            r#"<config>
  <service name="web">
    <listen ip="127.0.0.1:8080"/>
    <group name="prod" scheduler="roundr" enable="true">
      <host name="web1" ip="127.0.0.1:81"/><host name="web2" ip="127.0.0.1:82"/>
    </group>
    <group name="staging"><host name="stage1" ip="127.0.0.1:83"/></group>
  </service>
  <service name="api"><listen ip="127.0.0.1:9090"/>
    <group name="a" enable="true"><host name="api1" ip="127.0.0.1:91"/></group>
  </service>
  <admin><user name="admin" password="x" access="full"/></admin>
</config>"#,
        )
        .unwrap()
    }

    fn cands(before: &str) -> Vec<String> {
        complete(&sample(), before).candidates
    }

    #[test]
    fn completion_of_commands_and_names() {
        let c = sample();
        assert_eq!(cands("ho"), vec!["host"]);
        assert_eq!(cands("host d"), vec!["del", "down", "drain"]);
        assert_eq!(cands("host down "), vec!["api", "web"]);
        assert_eq!(cands("host down w"), vec!["web"]);
        assert_eq!(cands("host down web "), vec!["prod", "staging"]);
        assert_eq!(cands("host down web prod "), vec!["web1", "web2"]);
        assert_eq!(cands("host down web staging "), vec!["stage1"]);
        assert!(cands("host down web prod web1 ").is_empty());
        assert_eq!(cands("scheduler set web prod l"), vec!["leastc"]);
        assert_eq!(cands("show hosts web "), vec!["prod", "staging"]);
        assert_eq!(cands("show stats --"), vec!["--json"]);
        assert_eq!(cands("user del "), vec!["admin"]);
        assert_eq!(cands("listen del web "), vec!["127.0.0.1:8080"]);
        assert_eq!(cands("help sh"), vec!["show"]);
        assert_eq!(cands("show stats; host u"), vec!["up"]);
        let done = complete(&c, "host down web pr");
        assert_eq!(done.start, "host down web ".len());
    }

    #[test]
    fn tables_align_columns_and_right_align_numbers() {
        let t = table(
            &["NAME", "OPEN"],
            vec![
                vec!["a".into(), "7".into()],
                vec!["long".into(), "123".into()],
            ],
        );
        assert_eq!(t, "NAME  OPEN\na        7\nlong   123\n");
    }
}
