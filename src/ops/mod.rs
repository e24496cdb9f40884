//! Operations: every change a management surface offers, each written once
//! (mini-redis's `cmd/`): its name in the console and in the legacy web API,
//! its parameters, their validation, the [`Command`](crate::Command) it sends
//! (or the handle call it makes) and its answer. The legacy web API and the
//! page's forms (`admin/legacy.rs`), the JSON API (`admin/api.rs`) and the SSH
//! console (`ssh/commands.rs`) only turn their syntax into [`Args`] or an
//! [`Op`] and show the [`Answer`] or the [`OpError`]; the console's help and
//! completion, and the legacy routes, are read from [`OPERATIONS`].
//!
//! - `host`: add, remove, admin-down/up, retry, drain.
//! - `group`: add, remove, enable, clear, scheduler.
//! - `service`: services and their listeners.
//! - `route`: a listener's routes.
//! - `maintenance`: users, connections, saving and reloading the configuration,
//!   reopening the log.
//! - `read`: a service, group or host found by name, for the reads.
//! - `certificates`: the certificates in use (a read).
//! - `error`: [`OpError`] and its [`Kind`].

mod certificates;
mod error;
mod group;
mod host;
mod maintenance;
pub mod read;
mod route;
mod service;

use std::io;
use std::sync::Arc;

pub use certificates::{CertificateEntry, ReplaceCertificate, certificates};
pub use error::{Kind, OpError};
pub use group::{AddGroup, GroupRef, SetScheduler};
pub use host::{AddHost, Drain, HostRef, new_host};
pub use maintenance::{AddUser, connection_id, hash_password};
pub use route::RouteChange;
pub use service::{AddListener, AddService, RemoveListener};

use crate::BalancerHandle;
use crate::config::{Config, ListenOptions};

/// Reopens the log file (the legacy `closeLog`, the console's `log reopen`).
pub type ReopenLog = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;
/// Writes the running configuration to its file (the legacy `saveConfig`, the
/// console's `config save`); returns a one-line message on success or a
/// one-line reason on failure.
pub type SaveConfig = Arc<dyn Fn(&Config) -> Result<String, String> + Send + Sync>;

/// What kind of value a parameter is: for completion and usage lines.
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
    /// Anything else (an address, a number, a new name).
    Value,
}

/// One parameter of an operation.
#[derive(Debug)]
pub struct Param {
    /// Its name in the web API and the forms (`ip`).
    pub name: &'static str,
    /// Other names the legacy web API takes for it, after `name`.
    pub aliases: &'static [&'static str],
    /// Its name in the console's usage lines (`ADDRESS`).
    pub label: &'static str,
    /// What it is, for completion.
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))]
    pub kind: Arg,
    /// Whether it must be given.
    pub required: bool,
    /// Whether the console asks for it instead of reading it from the line
    /// (a password).
    pub asked: bool,
}

impl Param {
    const fn new(name: &'static str, label: &'static str, kind: Arg) -> Param {
        Param {
            name,
            aliases: &[],
            label,
            kind,
            required: true,
            asked: false,
        }
    }

    const fn optional(mut self) -> Param {
        self.required = false;
        self
    }

    const fn or(mut self, aliases: &'static [&'static str]) -> Param {
        self.aliases = aliases;
        self
    }

    const fn asked(mut self) -> Param {
        self.asked = true;
        self
    }
}

const SERVICE: Param = Param::new("service", "SERVICE", Arg::Service);
const GROUP: Param = Param::new("group", "GROUP", Arg::Group);
/// A host of the group, `name` or `host` in the legacy web API.
const HOST: Param = Param::new("name", "HOST", Arg::Host).or(&["host"]);
const NEW_GROUP: Param = Param::new("group", "GROUP", Arg::Value);
const SCHEDULER: Param = Param::new("scheduler", "SCHEDULER", Arg::Scheduler);
const USER: Param = Param::new("name", "NAME", Arg::User);
/// `retryHost` takes `host` first.
const RETRY_HOST: Param = Param::new("host", "HOST", Arg::Host).or(&["name"]);
/// A new host's name.
const NAME: Param = Param::new("name", "NAME", Arg::Value);
const ADDRESS: Param = Param::new("ip", "ADDRESS", Arg::Value);
const WEIGHT: Param = Param::new("weight", "WEIGHT", Arg::Value).optional();
const DEADLINE: Param = Param::new("deadline", "SECONDS", Arg::Value).optional();
const LISTEN: Param = Param::new("listen", "ADDRESS", Arg::Value);
const LISTENER: Param = Param::new("listen", "ADDRESS", Arg::Listener);
const NEW_SERVICE: Param = Param::new("service", "SERVICE", Arg::Value);
const SERVICE_LISTEN: Param = Param::new("listen", "LISTEN", Arg::Value);
const ID: Param = Param::new("id", "ID", Arg::Value);
const PASSWORD: Param = Param::new("password", "PASSWORD", Arg::Value).asked();
const ACCESS: Param = Param::new("access", "ACCESS", Arg::AccessLevel).optional();

/// One operation: its names, parameters and help, and how it is parsed.
pub struct Operation {
    /// Its console words (`["host", "add"]`); the script function is these
    /// joined by `_`.
    pub words: &'static [&'static str],
    /// Its legacy web API call (`addHost`), which the page's forms post to;
    /// `None`: not offered there.
    pub call: Option<&'static str>,
    /// Its parameters, in console order.
    pub params: &'static [Param],
    /// Listener settings it takes besides (`acceptProxy`, `trustedProxies`):
    /// named parameters in the web API, `NAME=VALUE` words in the console.
    pub settings: &'static [(&'static str, &'static str)],
    /// One line for help.
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))]
    pub summary: &'static str,
    /// More for `help COMMAND` (may be empty).
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))]
    pub detail: &'static str,
    parse: fn(&Args) -> Result<Op, OpError>,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation")
            .field("words", &self.words)
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl Operation {
    /// Reads its parameters.
    pub fn parse(&'static self, args: &Args) -> Result<Op, OpError> {
        (self.parse)(args)
    }
}

/// Every operation, in help order.
pub static OPERATIONS: &[Operation] = &[
    Operation {
        words: &["host", "add"],
        call: Some("addHost"),
        params: &[SERVICE, GROUP, NAME, ADDRESS, WEIGHT],
        settings: &[],
        summary: "add a host (ADDRESS is name-or-ip:port; WEIGHT default 1)",
        detail: "",
        parse: |a| Ok(Op::AddHost(AddHost::parse(a)?)),
    },
    Operation {
        words: &["host", "del"],
        call: Some("delHost"),
        params: &[SERVICE, GROUP, HOST],
        settings: &[],
        summary: "remove a host; its open connections continue",
        detail: "",
        parse: |a| Ok(Op::RemoveHost(HostRef::parse(a, &HOST)?)),
    },
    Operation {
        words: &["host", "down"],
        call: Some("hostAdminDown"),
        params: &[SERVICE, GROUP, HOST],
        settings: &[],
        summary: "take a host out of rotation (admin-down)",
        detail: "",
        parse: |a| Ok(Op::AdminDown(HostRef::parse(a, &HOST)?, true)),
    },
    Operation {
        words: &["host", "up"],
        call: Some("hostAdminUp"),
        params: &[SERVICE, GROUP, HOST],
        settings: &[],
        summary: "put an admin-down host back in rotation",
        detail: "",
        parse: |a| Ok(Op::AdminDown(HostRef::parse(a, &HOST)?, false)),
    },
    Operation {
        words: &["host", "retry"],
        call: Some("retryHost"),
        params: &[SERVICE, GROUP, RETRY_HOST],
        settings: &[],
        summary: "probe a host now; back in rotation if it answers",
        detail: "",
        parse: |a| Ok(Op::Retry(HostRef::parse(a, &RETRY_HOST)?)),
    },
    Operation {
        words: &["host", "drain"],
        call: Some("drainHost"),
        params: &[SERVICE, GROUP, HOST, DEADLINE],
        settings: &[],
        summary: "admin-down a host, and close what is still open after SECONDS",
        detail: "",
        parse: |a| Ok(Op::Drain(Drain::parse(a)?)),
    },
    Operation {
        words: &["group", "add"],
        call: Some("newGroup"),
        params: &[SERVICE, NEW_GROUP, SCHEDULER.optional()],
        settings: &[],
        summary: "add an empty group",
        detail: "",
        parse: |a| Ok(Op::AddGroup(AddGroup::parse(a)?)),
    },
    Operation {
        words: &["group", "del"],
        call: Some("delGroup"),
        params: &[SERVICE, GROUP],
        settings: &[],
        summary: "remove a group that is not enabled",
        detail: "",
        parse: |a| Ok(Op::RemoveGroup(GroupRef::parse(a)?)),
    },
    Operation {
        words: &["group", "enable"],
        call: Some("enableGroup"),
        params: &[SERVICE, GROUP],
        settings: &[],
        summary: "switch the enabled group; open connections continue",
        detail: "",
        parse: |a| Ok(Op::EnableGroup(GroupRef::parse(a)?)),
    },
    Operation {
        words: &["group", "clear"],
        call: Some("delAllHosts"),
        params: &[SERVICE, GROUP],
        settings: &[],
        summary: "remove every host of a group that is not enabled",
        detail: "",
        parse: |a| Ok(Op::ClearGroup(GroupRef::parse(a)?)),
    },
    Operation {
        words: &["scheduler", "set"],
        call: Some("changeScheduler"),
        params: &[SERVICE, GROUP, SCHEDULER],
        settings: &[],
        summary: "change a group's scheduler",
        detail: "",
        parse: |a| Ok(Op::SetScheduler(SetScheduler::parse(a)?)),
    },
    Operation {
        words: &["listen", "add"],
        call: Some("addListener"),
        params: &[SERVICE, LISTEN],
        settings: ListenOptions::KEYS,
        summary: "listen on one more address for a service",
        detail: "SETTING: acceptProxy=true|false or trustedProxies=CIDR,... for this \
                 listener alone (as on <listen>); without, it follows the service.",
        parse: |a| Ok(Op::AddListener(AddListener::parse(a)?)),
    },
    Operation {
        words: &["listen", "del"],
        call: Some("delListener"),
        params: &[SERVICE, LISTENER],
        settings: &[],
        summary: "stop listening on an address",
        detail: "",
        parse: |a| Ok(Op::RemoveListener(RemoveListener::parse(a)?)),
    },
    Operation {
        words: &["route", "add"],
        call: Some("addRoute"),
        params: &[SERVICE, LISTENER, route::TO],
        settings: route::ROUTE_KEYS,
        summary: "route a listener's clients to another service by what they send first",
        detail: "CONDITION: sni=NAME|*.SUFFIX|*, alpn=PROTOCOL, protocol=tls|http|ssh|other, \
                 host=NAME (with protocol=http); every one given must match. \
                 position=N puts the route N-th (the first match wins); without, last.",
        parse: |a| Ok(Op::AddRoute(RouteChange::parse(a)?)),
    },
    Operation {
        words: &["route", "del"],
        call: Some("delRoute"),
        params: &[SERVICE, LISTENER, route::TO],
        settings: route::ROUTE_KEYS,
        summary: "remove a listener's route (the same conditions and service)",
        detail: "",
        parse: |a| Ok(Op::RemoveRoute(RouteChange::parse(a)?)),
    },
    Operation {
        words: &["service", "add"],
        call: Some("newService"),
        params: &[
            NEW_SERVICE,
            SERVICE_LISTEN,
            NEW_GROUP.optional(),
            SCHEDULER.optional(),
            Param::new("name", "HOST", Arg::Value).optional(),
            ADDRESS.optional(),
            WEIGHT,
        ],
        settings: &[],
        summary: "add a service with one group (GROUP default main), with a first host \
                  when HOST and ADDRESS are given",
        detail: "",
        parse: |a| Ok(Op::AddService(AddService::parse(a)?)),
    },
    Operation {
        words: &["service", "del"],
        call: Some("delService"),
        params: &[SERVICE],
        settings: &[],
        summary: "remove a service; its connections continue",
        detail: "",
        parse: |a| Ok(Op::RemoveService(a.required(&SERVICE)?.to_string())),
    },
    Operation {
        words: &["connection", "close"],
        call: Some("closeConnection"),
        params: &[ID],
        settings: &[],
        summary: "close one open connection (ids from show connections)",
        detail: "",
        parse: |a| Ok(Op::CloseConnection(maintenance::connection_id(a)?)),
    },
    Operation {
        words: &["user", "add"],
        call: Some("addUser"),
        params: &[NAME, PASSWORD, ACCESS],
        settings: &[],
        summary: "add an admin user (asks for the password; ACCESS full or readonly)",
        detail: "Run as `ssh … 'user add NAME'`, the password is the first line of \
                 standard input.",
        parse: |a| Ok(Op::AddUser(AddUser::parse(a)?)),
    },
    Operation {
        words: &["user", "del"],
        call: Some("delUser"),
        params: &[USER],
        settings: &[],
        summary: "remove an admin user",
        detail: "",
        parse: |a| Ok(Op::RemoveUser(a.required(&USER)?.into())),
    },
    Operation {
        words: &["config", "save"],
        call: Some("saveConfig"),
        params: &[],
        settings: &[],
        summary: "write the running configuration to its file, keeping comments",
        detail: "",
        parse: |_| Ok(Op::SaveConfig),
    },
    Operation {
        words: &["config", "reload"],
        call: None,
        params: &[],
        settings: &[],
        summary: "load the configuration file again (like SIGHUP)",
        detail: "",
        parse: |_| Ok(Op::Reload),
    },
    Operation {
        words: &["log", "reopen"],
        call: Some("closeLog"),
        params: &[],
        settings: &[],
        summary: "reopen the log file (after rotation)",
        detail: "",
        parse: |_| Ok(Op::ReopenLog),
    },
];

/// The operation of a legacy web API call.
pub fn by_call(call: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|o| o.call == Some(call))
}

/// The parameters of one operation, by their web API names, as a surface read
/// them (query string, form, console words, JSON fields).
#[derive(Debug, Clone, Default)]
pub struct Args {
    values: Vec<(&'static str, String)>,
    settings: Vec<(String, String)>,
}

impl Args {
    /// No parameters.
    pub fn new() -> Args {
        Args::default()
    }

    /// Sets parameter `name` (blank values count as absent).
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.values.retain(|(n, _)| *n != name);
        self.values.push((name, value.into()));
    }

    /// Sets parameter `name` when `value` is given.
    pub fn with(mut self, name: &'static str, value: Option<impl Into<String>>) -> Args {
        if let Some(value) = value {
            self.set(name, value);
        }
        self
    }

    /// Adds a listener setting (`acceptProxy`, `true`).
    pub fn setting(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.settings.push((key.into(), value.into()));
    }

    /// A parameter's value, trimmed; blank counts as absent.
    fn get(&self, param: &Param) -> Option<&str> {
        self.raw(param).map(str::trim).filter(|v| !v.is_empty())
    }

    /// A parameter's value as given (a password).
    fn raw(&self, param: &Param) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == param.name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, param: &Param) -> Result<&str, OpError> {
        self.get(param).ok_or(OpError::Missing {
            name: param.name,
            label: param.label,
        })
    }

    /// A parameter read by `parse`; its errors name the parameter.
    fn parsed<T>(
        &self,
        param: &Param,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, OpError> {
        self.get(param)
            .map(parse)
            .transpose()
            .map_err(|reason| bad(param, reason))
    }
}

fn bad(param: &Param, reason: impl Into<String>) -> OpError {
    OpError::Bad {
        name: param.name,
        label: param.label,
        reason: reason.into(),
    }
}

/// One operation with its parameters read and checked.
#[derive(Debug)]
pub enum Op {
    /// Add a host.
    AddHost(AddHost),
    /// Remove a host.
    RemoveHost(HostRef),
    /// Take a host out of rotation (`true`) or put it back.
    AdminDown(HostRef, bool),
    /// Probe a host now.
    Retry(HostRef),
    /// Drain a host.
    Drain(Drain),
    /// Add a group.
    AddGroup(AddGroup),
    /// Remove a group that is not enabled.
    RemoveGroup(GroupRef),
    /// Switch the enabled group.
    EnableGroup(GroupRef),
    /// Remove every host of a group that is not enabled.
    ClearGroup(GroupRef),
    /// Change a group's scheduler.
    SetScheduler(SetScheduler),
    /// Listen on one more address.
    AddListener(AddListener),
    /// Stop listening on an address.
    RemoveListener(RemoveListener),
    /// Add a route to a listener.
    AddRoute(RouteChange),
    /// Remove a route of a listener.
    RemoveRoute(RouteChange),
    /// Add a service.
    AddService(AddService),
    /// Remove a service.
    RemoveService(String),
    /// Close one open connection.
    CloseConnection(u64),
    /// Add an admin user.
    AddUser(AddUser),
    /// Remove an admin user.
    RemoveUser(String),
    /// Write the running configuration to its file.
    SaveConfig,
    /// Read the configuration file again and run it.
    Reload,
    /// Reopen the log file.
    ReopenLog,
}

/// What an operation runs with.
#[derive(Clone)]
pub struct Context<'a> {
    /// The balancer.
    pub handle: &'a BalancerHandle,
    /// The `closeLog` hook; `None`: there is no log file to reopen.
    pub reopen_log: Option<ReopenLog>,
    /// The `saveConfig` hook; `None`: saving is not set up.
    pub save_config: Option<SaveConfig>,
}

/// What a done operation answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// One line, starting `OK ` (the legacy web API's answer, the console's line).
    pub text: String,
    /// `retry`: whether the host answered.
    pub answered: Option<bool>,
}

impl Answer {
    fn text(text: String) -> Answer {
        Answer {
            text,
            answered: None,
        }
    }
}

impl Op {
    /// Does it: most operations are one [`Command`](crate::Command) and a
    /// text; the others ask more of the balancer or call a hook.
    pub async fn run(self, ctx: &Context<'_>) -> Result<Answer, OpError> {
        let h = ctx.handle;
        let (command, text) = match self {
            Op::AddHost(op) => op.change(),
            Op::RemoveHost(op) => op.remove(),
            Op::AdminDown(op, down) => op.admin_down(down),
            Op::AddGroup(op) => op.change(),
            Op::RemoveGroup(op) => op.remove(),
            Op::EnableGroup(op) => op.enable(),
            Op::ClearGroup(op) => op.clear(),
            Op::SetScheduler(op) => op.change(),
            Op::RemoveListener(op) => op.change(),
            Op::AddRoute(op) => op.add(),
            Op::RemoveRoute(op) => op.remove(),
            Op::RemoveService(service) => service::remove(service),
            Op::RemoveUser(name) => maintenance::remove_user(name),
            Op::Retry(op) => return op.retry(h).await,
            Op::Drain(op) => return op.run(h).await.map(Answer::text),
            Op::AddListener(op) => return op.run(h).await.map(Answer::text),
            Op::AddService(op) => return op.run(h).await.map(Answer::text),
            Op::CloseConnection(id) => {
                return maintenance::close_connection(h, id).await.map(Answer::text);
            }
            Op::AddUser(op) => return op.run(h).await.map(Answer::text),
            Op::SaveConfig => return maintenance::save_config(ctx).await.map(Answer::text),
            Op::Reload => return maintenance::reload(h).await.map(Answer::text),
            Op::ReopenLog => return maintenance::reopen_log(ctx).await.map(Answer::text),
        };
        h.apply(command).await?;
        Ok(Answer::text(text))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn by_words(words: &[&str]) -> Option<&'static Operation> {
        OPERATIONS.iter().find(|o| o.words == words)
    }

    fn name(op: &Operation) -> String {
        op.words.join(" ")
    }

    #[test]
    fn names_and_calls_are_unique_and_every_operation_has_help() {
        let (mut words, mut calls) = (HashSet::new(), HashSet::new());
        for op in OPERATIONS {
            assert!(words.insert(name(op)), "{}", name(op));
            assert!(op.call.is_none_or(|c| calls.insert(c)), "{:?}", op.call);
            assert!(!op.summary.is_empty(), "{}", name(op));
            assert_eq!(by_words(op.words).map(name), Some(name(op)));
            if let Some(call) = op.call {
                assert_eq!(by_call(call).map(name), Some(name(op)));
            }
            // Required parameters come first: the console reads them in order.
            let first_optional = op.params.iter().position(|p| !p.required);
            if let Some(at) = first_optional {
                assert!(op.params[at..].iter().all(|p| !p.required), "{}", name(op));
            }
        }
    }

    #[test]
    fn a_missing_or_bad_parameter_is_named() {
        let add_host = by_words(&["host", "add"]).unwrap();
        let args = Args::new()
            .with("service", Some("s"))
            .with("group", Some("g"))
            .with("name", Some("h"));
        match add_host.parse(&args) {
            Err(OpError::Missing { name, label }) => assert_eq!((name, label), ("ip", "ADDRESS")),
            other => panic!("{other:?}"),
        }
        let args = args.with("ip", Some("nope")).with("weight", Some("0"));
        match add_host.parse(&args) {
            Err(OpError::Bad { name, label, .. }) => assert_eq!((name, label), ("ip", "ADDRESS")),
            other => panic!("{other:?}"),
        }
        let args = args.with("ip", Some("127.0.0.1:80"));
        match add_host.parse(&args) {
            Err(e @ OpError::Bad { name: "weight", .. }) => {
                assert_eq!(e.kind(), Kind::Invalid)
            }
            other => panic!("{other:?}"),
        }
        let args = args.with("weight", Some(" 3 "));
        let Ok(Op::AddHost(op)) = add_host.parse(&args) else {
            panic!()
        };
        assert_eq!(op.host.weight, 3);
    }

    #[test]
    fn defaults_are_the_configuration_files() {
        let args = Args::new()
            .with("service", Some("s"))
            .with("listen", Some("127.0.0.1:0"));
        let Ok(Op::AddService(op)) = by_call("newService").unwrap().parse(&args) else {
            panic!()
        };
        let service = op.service_config();
        assert_eq!(service.groups[0].name, "main");
        assert_eq!(service.enabled_group, "main");
        assert_eq!(
            service.groups[0].scheduler,
            crate::config::DEFAULT_SCHEDULER
        );
        assert!(service.groups[0].hosts.is_empty());
    }

    #[test]
    fn listener_settings_are_checked() {
        let op = by_words(&["listen", "add"]).unwrap();
        let mut args = Args::new()
            .with("service", Some("s"))
            .with("listen", Some("127.0.0.1:0"));
        args.setting("acceptProxy", "true");
        let Ok(Op::AddListener(l)) = op.parse(&args) else {
            panic!()
        };
        assert_eq!(l.listener.options.accept_proxy, Some(true));
        args.setting("frobnicate", "1");
        match op.parse(&args) {
            Err(OpError::Bad { name, reason, .. }) => {
                assert_eq!(name, "setting");
                assert!(reason.contains("acceptProxy or trustedProxies"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
