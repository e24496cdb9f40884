//! The console's command language: one table of commands ([`COMMANDS`]) drives
//! parsing, `help`, tab completion, the script functions and the read-only
//! rule. The commands that change the balancer are the operations of
//! [`crate::ops`] (the same the web API runs): this file reads their words and
//! prints their answer; the others (`show …`, `watch`, `help`) are the
//! console's own views.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::Duration;

use serde::Serialize;

use super::SshSettings;
use super::views::{
    certificates_table, connections_table, host_rows, hosts_table, services_table, stats_table,
    table, udp_table,
};
use crate::BalancerHandle;
use crate::admin::Principal;
use crate::config::{Access, Config, DEFAULT_SCHEDULER, parse_seconds};
use crate::control::ControlError;
pub use crate::ops::Arg;
use crate::ops::{AddUser, Args, OPERATIONS, Op, OpError, Operation, read};
use crate::scheduler::SchedulerKind;

/// Default refresh period of `watch stats`.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Shortest refresh period `watch stats` accepts.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// One console command: its words, arguments, flags and whether it changes the
/// balancer (read-only users may run only those that do not).
#[derive(Debug)]
pub struct Spec {
    /// The command's words, e.g. `["host", "add"]`.
    pub words: &'static [&'static str],
    /// Positional arguments: name shown in usage and kind.
    pub args: Vec<(&'static str, Arg)>,
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
    /// Whether scripts have it as a function (not those that talk to the
    /// terminal).
    pub(crate) script: bool,
    /// The operation it runs; `None` for the console's own commands.
    pub(crate) op: Option<&'static Operation>,
}

/// The most `NAME=VALUE` words a command takes: a listener's four settings,
/// or a route's conditions that make sense together (protocol, sni, alpn) and
/// its position.
const MAX_SETTING_WORDS: usize = 4;

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

    /// The console command of an operation: its parameters but those the
    /// console asks for, then one `NAME=VALUE` word per setting, at most
    /// [`MAX_SETTING_WORDS`].
    fn of(op: &'static Operation) -> Spec {
        let on_line = || op.params.iter().filter(|p| !p.asked);
        let mut args: Vec<(&'static str, Arg)> = on_line().map(|p| (p.label, p.kind)).collect();
        let settings = op.settings.len().min(MAX_SETTING_WORDS);
        args.extend(std::iter::repeat_n(("SETTING", Value), settings));
        Spec {
            words: op.words,
            args,
            required: on_line().filter(|p| p.required).count(),
            flags: &[],
            changes: true,
            summary: op.summary,
            detail: op.detail,
            script: !op.params.iter().any(|p| p.asked),
            op: Some(op),
        }
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

/// A command of the console's own, which only reads or talks to the terminal.
struct Own {
    words: &'static [&'static str],
    args: &'static [(&'static str, Arg)],
    required: usize,
    flags: &'static [&'static str],
    summary: &'static str,
    detail: &'static str,
    script: bool,
}

impl Own {
    const fn new(words: &'static [&'static str], summary: &'static str) -> Own {
        Own {
            words,
            args: &[],
            required: 0,
            flags: &[],
            summary,
            detail: "",
            script: true,
        }
    }

    const fn args(mut self, args: &'static [(&'static str, Arg)], required: usize) -> Own {
        self.args = args;
        self.required = required;
        self
    }

    const fn flags(mut self, flags: &'static [&'static str]) -> Own {
        self.flags = flags;
        self
    }

    const fn detail(mut self, detail: &'static str) -> Own {
        self.detail = detail;
        self
    }

    /// Not a script function: it talks to the terminal.
    const fn terminal(mut self) -> Own {
        self.script = false;
        self
    }

    fn spec(&self) -> Spec {
        Spec {
            words: self.words,
            args: self.args.to_vec(),
            required: self.required,
            flags: self.flags,
            changes: false,
            summary: self.summary,
            detail: self.detail,
            script: self.script,
            op: None,
        }
    }
}

/// The console's own commands before the operations in `help`.
const VIEWS: &[Own] = &[
    Own::new(&["help"], "list the commands, or explain one")
        .args(&[("COMMAND", Value)], 0)
        .detail(
            "Exit status of a command run as `ssh … 'COMMAND'`: 0 done, 1 refused \
             (unknown name, a rule of the model, a failed hook), 2 not understood, \
             3 not allowed for a read-only user.",
        )
        .terminal(),
    Own::new(
        &["show", "services"],
        "services with listeners, enabled group and counters",
    )
    .flags(JSON),
    Own::new(
        &["show", "udp"],
        "UDP services: sessions, datagrams each way, drops by reason",
    )
    .flags(JSON),
    Own::new(
        &["show", "stats"],
        "counters of every host (--json: the whole balancer's stats)",
    )
    .flags(JSON),
    Own::new(
        &["show", "hosts"],
        "hosts with address, weight, state and why they are bad",
    )
    .args(&[SVC, GRP], 0)
    .flags(JSON),
    Own::new(
        &["show", "check"],
        "what a host's checks say: state, reason, active check, agent, ejection",
    )
    .args(&[SVC, GRP, HST], 3)
    .flags(JSON),
    Own::new(
        &["show", "connections"],
        "open client connections, oldest first",
    )
    .args(&[SVC, HST], 0)
    .flags(JSON),
    Own::new(&["show", "users"], "admin users and their access").flags(JSON),
    Own::new(
        &["show", "certs"],
        "certificates in use: listeners' and groups' client ones, with expiry",
    )
    .flags(JSON),
    Own::new(
        &["show", "config"],
        "the running configuration as XML (or TOML, JSON; --boot: as started)",
    )
    .flags(&["--boot", "--toml", "--json"]),
    Own::new(
        &["show", "diff"],
        "what changed since start (boot vs running configuration)",
    ),
    Own::new(&["whoami"], "who you are logged in as, and your access").flags(JSON),
    Own::new(
        &["watch", "stats"],
        "show stats again every SECONDS (default 2) until a key is pressed",
    )
    .args(&[("SECONDS", Value)], 0)
    .terminal(),
];

/// The console's own commands after the operations in `help`.
const SESSION: &[Own] = &[
    Own::new(
        &["script"],
        "run a Rhai script whose functions are these commands",
    )
    .args(&[("CODE", Value)], 0)
    .detail(
        "Functions: one per command, its words joined by _, taking its \
         arguments: host_down(\"svc\", \"g\", \"a\"), group_enable(…); \
         show_stats(), show_hosts(SERVICE) … return maps and arrays; \
         run(\"any console line\") returns its output. Errors can be caught \
         with try/catch. Without CODE the script is read from standard \
         input (exec), or typed until a line with a single . (console). \
         Example: for h in show_hosts(\"svc\") { if h.health == \"bad\" \
         { print(host_retry(h.service, h.group, h.name)) } }",
    )
    .terminal(),
    Own::new(&["exit"], "leave the console (also quit, Ctrl-D)").terminal(),
];

/// Every console command, in `help` order: the views, every operation, the
/// session's commands.
pub static COMMANDS: LazyLock<Vec<Spec>> = LazyLock::new(|| {
    VIEWS
        .iter()
        .map(Own::spec)
        .chain(OPERATIONS.iter().map(Spec::of))
        .chain(SESSION.iter().map(Own::spec))
        .collect()
});

/// Names of the script functions (each command's words joined by `_`, and
/// `run`), for `help script`.
pub fn function_names() -> Vec<String> {
    let mut names: Vec<String> = COMMANDS
        .iter()
        .filter(|s| s.script)
        .map(|s| s.words.join("_"))
        .collect();
    names.push("run".into());
    names
}

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

/// A parameter the console read is wrong: a usage error naming it as usage
/// lines do; anything else is a refusal.
impl From<OpError> for ConsoleError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Missing { label, .. } => ConsoleError::Usage(format!("{label}: missing")),
            OpError::Bad { label, reason, .. } => ConsoleError::Usage(format!("{label}: {reason}")),
            e => ConsoleError::Refused(e.to_string()),
        }
    }
}

impl From<ControlError> for ConsoleError {
    fn from(e: ControlError) -> Self {
        OpError::from(e).into()
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
    pub(crate) scripts: std::sync::Arc<super::slots::Scripts>,
    /// The server's sessions: a running script holds a place among them.
    pub(crate) session: tokio_util::task::TaskTracker,
}

impl Context {
    /// What an operation runs with: the balancer and this server's hooks.
    fn op_context(&self) -> crate::ops::Context<'_> {
        crate::ops::Context {
            handle: &self.handle,
            reopen_log: self.settings.reopen_log.clone(),
            save_config: self.settings.save_config.clone(),
        }
    }
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
    if let Some(op) = p.spec.op {
        return run_op(ctx, p, op).await;
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
        "show udp" => {
            let stats = h.stats();
            let udp: Vec<_> = stats
                .services
                .iter()
                .filter(|s| s.protocol == "udp")
                .collect();
            if json {
                return text(to_json(&udp));
            }
            text(udp_table(&udp))
        }
        "show stats" => {
            let stats = h.stats();
            if json {
                return text(to_json(&stats));
            }
            text(stats_table(&stats))
        }
        "show check" => {
            let (service, group, host) = (
                p.arg(0).unwrap_or_default(),
                p.arg(1).unwrap_or_default(),
                p.arg(2).unwrap_or_default(),
            );
            let read = read::host_check(&h.stats(), &h.config(), service, group, host)?;
            if json {
                return text(to_json(&read));
            }
            text(format!("{}\n", read.text(host)))
        }
        "show hosts" => {
            let stats = h.stats();
            // Names that do not exist are refused, not shown as no rows.
            match (p.arg(0), p.arg(1)) {
                (Some(service), Some(group)) => {
                    read::group(&stats, service, group)?;
                }
                (Some(service), None) => {
                    read::service(&stats, service)?;
                }
                _ => {}
            }
            let rows = host_rows(&stats, p.arg(0), p.arg(1));
            if json {
                return text(to_json(&rows));
            }
            text(hosts_table(&rows))
        }
        "show connections" => {
            let list = read::connections(h, p.arg(0), p.arg(1)).await;
            if json {
                return text(to_json(&list));
            }
            text(connections_table(&list))
        }
        "show certs" => {
            let list = crate::ops::certificates(h);
            if json {
                return text(to_json(&list));
            }
            text(certificates_table(&list))
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
        other => Err(ConsoleError::Usage(format!("unknown command {other:?}"))),
    }
}

/// Runs an operation: its arguments in the order of its parameters, then
/// `NAME=VALUE` settings. `user add` first asks for the password.
async fn run_op(
    ctx: &Context,
    p: &Parsed,
    op: &'static Operation,
) -> Result<Outcome, ConsoleError> {
    match op.parse(&op_args(op, &p.args)?)? {
        Op::AddUser(AddUser {
            name,
            password: None,
            access,
        }) => {
            let user = AddUser {
                name,
                password: None,
                access,
            };
            user.refuse_taken(&ctx.handle)?;
            Ok(Outcome::AddUser {
                name: user.name,
                access,
            })
        }
        op => Ok(Outcome::Text(format!(
            "{}\n",
            op.run(&ctx.op_context()).await?.text
        ))),
    }
}

/// An operation's arguments from the words after its name: its parameters in
/// order (but those the console asks for), then `NAME=VALUE` settings.
fn op_args(op: &Operation, words: &[String]) -> Result<Args, ConsoleError> {
    let mut args = Args::new();
    let mut params = op.params.iter().filter(|p| !p.asked);
    for word in words {
        match params.next() {
            Some(param) => args.set(param.name, word.as_str()),
            None => {
                let (key, value) = word
                    .split_once('=')
                    .ok_or_else(|| ConsoleError::Usage("SETTING: expected NAME=VALUE".into()))?;
                args.setting(key, value);
            }
        }
    }
    Ok(args)
}

/// Adds the user with the password the console asked for (the second half of
/// `user add`).
pub async fn add_user(
    ctx: &Context,
    name: &str,
    access: Access,
    password: String,
) -> Result<String, ConsoleError> {
    let op = Op::AddUser(AddUser {
        name: name.to_string(),
        password: Some(password),
        access,
    });
    Ok(format!("{}\n", op.run(&ctx.op_context()).await?.text))
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
                let _ = writeln!(t, "    Functions: {}", function_names().join(", "));
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
    for spec in COMMANDS.iter() {
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
        for s in COMMANDS.iter() {
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
        for spec in COMMANDS.iter() {
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
                assert!(name.parse::<SchedulerKind>().is_ok(), "{name}");
            }
            let mut line = spec.words.join(" ");
            for _ in 0..at {
                line.push_str(" web");
            }
            line.push(' ');
            assert_eq!(cands(&line).len(), all.len(), "{line}");
            if at >= spec.required {
                let default = DEFAULT_SCHEDULER;
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

    /// A console line and the legacy call with the same values make the same
    /// operation: the console's words are the operation's parameters.
    #[test]
    fn console_words_and_legacy_parameters_make_the_same_operation() {
        let value = |label: &str| match label {
            "ADDRESS" | "LISTEN" => "127.0.0.1:81",
            "WEIGHT" | "ID" | "SECONDS" => "3",
            "SCHEDULER" => "leastc",
            "ACCESS" => "readonly",
            "HOST" => "h1",
            _ => "x",
        };
        for op in crate::ops::OPERATIONS {
            let name = op.words.join(" ");
            let on_line: Vec<&crate::ops::Param> = op.params.iter().filter(|p| !p.asked).collect();
            let mut line = name.clone();
            let mut legacy = Args::new();
            for p in &on_line {
                line.push(' ');
                line.push_str(value(p.label));
                legacy.set(p.name, value(p.label));
            }
            if let Some((key, _)) = op.settings.first() {
                let value = match *key {
                    "sni" => "x.example.com",
                    _ => "true",
                };
                line.push_str(&format!(" {key}={value}"));
                legacy.setting(*key, value);
            }
            let parsed = parse(&words(&line)).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(parsed.spec.op.map(|o| o.words), Some(op.words), "{line}");
            let console = op.parse(&op_args(op, &parsed.args).unwrap());
            let web = op.parse(&legacy);
            assert_eq!(format!("{console:?}"), format!("{web:?}"), "{line}");
            assert!(console.is_ok(), "{line}: {console:?}");
        }
    }

    /// Each operation is a console command from the same table: found by its
    /// words, with help, completion and (unless it asks for a password) a
    /// script function.
    #[test]
    fn every_operation_is_a_command_with_help_completion_and_a_function() {
        for op in crate::ops::OPERATIONS {
            let name = op.words.join(" ");
            let words: Vec<String> = op.words.iter().map(|w| w.to_string()).collect();
            let spec = find_spec(&words).unwrap_or_else(|| panic!("{name}"));
            assert!(spec.op.is_some_and(|o| std::ptr::eq(o, op)), "{name}");
            assert!(spec.changes, "{name}");
            assert!(help(Some(&name)).contains(&spec.usage()), "{name}");
            assert!(cands(op.words[0]).contains(&words[0]), "{name}");
            assert!(
                cands(&format!("{} ", op.words[0])).contains(&words[1]),
                "{name}"
            );
            // Script functions take up to seven arguments.
            assert!(spec.args.len() <= 7, "{name}");
            let asked = op.params.iter().any(|p| p.asked);
            assert_eq!(
                function_names().contains(&op.words.join("_")),
                !asked,
                "{name}"
            );
        }
    }
}
