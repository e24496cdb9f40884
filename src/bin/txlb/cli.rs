//! The command line of `txlb`, for the binary and for `cargo xtask`, which
//! renders it as the man page and the shell completions.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Default grace period at shutdown, in seconds: how long open connections may
/// take to finish after SIGTERM or SIGINT (`--grace`).
pub const DEFAULT_GRACE_SECS: f64 = 30.0;

/// Default of `txlb upgrade --ready-timeout`, in seconds.
pub const DEFAULT_READY_TIMEOUT_SECS: f64 = 60.0;

/// Default of `txlb upgrade --handoff-deadline`, in seconds.
pub const DEFAULT_HANDOFF_DEADLINE_SECS: f64 = 30.0;

/// txlb: a TCP load balancer that reads txLoadBalancer's configuration.
#[derive(Debug, Parser)]
#[command(name = "txlb", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the balancer.
    Run {
        #[command(flatten)]
        config: ConfigFile,
        /// Data-path worker threads, each with its own copy of every listener
        /// (default: one per CPU). The control plane runs on the main thread.
        #[arg(long)]
        workers: Option<usize>,
        /// Seconds open connections may take to finish at shutdown (SIGTERM,
        /// SIGINT) before the rest are closed.
        #[arg(long, default_value_t = DEFAULT_GRACE_SECS)]
        grace: f64,
    },
    /// Upgrade the running txlb without refusing a client: the process running
    /// the configuration FILE starts the binary (by default its own path, so
    /// after a package upgrade the new version runs) and hands it every
    /// listening socket and its running state (unsaved changes, host states,
    /// counters); once the new process serves, the old one stops accepting and
    /// drains. Exits 0 once the new process serves, non-zero with the reason
    /// when the upgrade failed (the old process then serves on). SIGUSR2 to the
    /// running process does the same with the defaults.
    Upgrade {
        #[command(flatten)]
        config: ConfigFile,
        /// The binary to start instead of the running one's own path.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Seconds the new process has to serve before it is stopped and the
        /// upgrade fails.
        #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_READY_TIMEOUT_SECS)]
        ready_timeout: f64,
        /// Seconds established connections have to go quiet and move to the
        /// new process: idle (parked) ones move at once, busy ones once nothing
        /// has moved for a second; those still busy then, and TLS-terminated
        /// ones, stay and drain in the old process.
        #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_HANDOFF_DEADLINE_SECS)]
        handoff_deadline: f64,
    },
    /// Validate a configuration file and print a summary.
    Check {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Run three demo backends and a balancer in front of them on localhost, with
    /// the admin web UI.
    Demo {
        /// Where the demo balancer listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's admin web UI listens (user `admin`, password printed);
        /// default 127.0.0.1:8081, or a free port when --listen asks for one.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Read a password (from the terminal without echo, or a line of stdin) and
    /// print its SHA-512-crypt hash for `<user password="...">`.
    Passwd,
    /// Print the JSON Schema of the TOML configuration, for editors.
    Schema,
    /// Fleet mode (`<cluster>`): instances sharing their configuration through etcd.
    Fleet {
        #[command(subcommand)]
        command: FleetCmd,
    },
}

/// The configuration file, given as `--config FILE` or as `FILE`.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ConfigFile {
    /// Configuration file (txLoadBalancer XML, or TOML when it ends in .toml).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The configuration file, as a positional argument.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

impl ConfigFile {
    /// The file, whichever way it was given.
    pub fn path(self) -> PathBuf {
        // clap's group makes exactly one of the two present.
        self.config.or(self.file).unwrap_or_default()
    }
}

/// The commands of fleet mode.
#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Publish a configuration file's services, users and managers to the etcd
    /// its <cluster> names, replacing the fleet's; every running instance applies
    /// it at once.
    Push {
        /// Configuration file with a <cluster> element.
        #[arg(short, long)]
        config: PathBuf,
    },
}
