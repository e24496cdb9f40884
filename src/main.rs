//! The `txlb` command: run a balancer from a configuration file, check one, or run
//! the demo. A thin layer over the library: parse arguments, set up logging, load
//! the configuration, start, and turn signals into shutdown and reload. It uses
//! the library's public API only; systemd integration lives here, in `systemd`.

mod admin_plane;
mod systemd;

/// mimalloc keeps each size of allocation in its own pages, so the pages of
/// the tasks that parked connections left (see `txlb::proxy` parking) empty
/// out whole and go back to the kernel; glibc's heap keeps them, pinned by
/// the few live objects between them. Wrapped to meter SSH `script` threads
/// (others pay one thread-local read per allocation).
#[global_allocator]
static GLOBAL: txlb::ssh::MeteredAlloc<mimalloc::MiMalloc> =
    txlb::ssh::MeteredAlloc(mimalloc::MiMalloc);

/// Hands pages back as soon as they empty (mimalloc waits 10 ms, and an idle
/// worker never comes back to finish), in 4 KiB pages: with transparent huge
/// pages a page goes back only when all 2 MiB around it are free. The option
/// number is the same in mimalloc 2 and 3 (`mimalloc.h`); `tests/parking.rs`
/// measures the effect.
fn tune_allocator() {
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: a plain setter of mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use admin_plane::AdminPlane;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use txlb::config::Config;
use txlb::config::writeback::{self, WriteBack};
use txlb::{Balancer, BalancerHandle, Command};

/// Default grace period at shutdown, in seconds: how long open connections may
/// take to finish after SIGTERM or SIGINT (`--grace`).
const DEFAULT_GRACE_SECS: f64 = 30.0;

/// txlb: a TCP load balancer that reads txLoadBalancer's configuration.
#[derive(Debug, Parser)]
#[command(name = "txlb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page txlb(1), in roff.
    Man,
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
struct ConfigFile {
    /// Configuration file (txLoadBalancer XML, or TOML when it ends in .toml).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The configuration file, as a positional argument.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

impl ConfigFile {
    fn path(self) -> PathBuf {
        // clap's group makes exactly one of the two present.
        self.config.or(self.file).unwrap_or_default()
    }
}

#[derive(Debug, Subcommand)]
enum FleetCmd {
    /// Publish a configuration file's services, users and managers to the etcd
    /// its <cluster> names, replacing the fleet's; every running instance applies
    /// it at once.
    Push {
        /// Configuration file with a <cluster> element.
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Run { .. } | Cmd::Demo { .. }) {
        // Commands that only print end quietly when their reader goes away
        // (`txlb check FILE | head`), as Unix tools do; Rust ignores SIGPIPE and
        // println! would panic. The servers keep it ignored: a peer closing a
        // socket is an error to handle, not a reason to die.
        // SAFETY: no other thread yet; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("txlb: {}", error_text(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the
/// message already carries (errors that print their source, such as a bind
/// failure's OS error, would otherwise say it twice).
fn error_text(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Run {
            config,
            workers,
            grace,
        } => {
            let config = config.path();
            // SAFETY: still one thread (no runtime yet), and nothing took fds 3 and up.
            let inherited = unsafe { systemd::take_listen_fds() }?;
            let manager = ServiceManager {
                // A broken NOTIFY_SOCKET costs the notifications, not the service.
                notifier: systemd::Notifier::from_env().unwrap_or_else(|error| {
                    eprintln!("txlb: ignoring NOTIFY_SOCKET: {error}");
                    systemd::Notifier::default()
                }),
                inherited,
            };
            // The text is kept: write-back edits exactly what was parsed.
            let (text, loaded) = writeback::load(&config)?;
            let log_file = init_logging(&loaded)?;
            let workers = workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let grace = Duration::from_secs_f64(grace.max(0.0));
            let boot = Boot {
                path: config,
                text,
                log_file,
                manager,
            };
            control_runtime()?.block_on(serve(boot, loaded, workers, grace))
        }
        Cmd::Check { config } => {
            let config = config.path();
            let loaded = Config::from_path(&config)?;
            control_runtime()?.block_on(check(&config, &loaded))
        }
        Cmd::Demo { listen, admin } => {
            init_stderr_logging();
            let port = if listen.port() == 0 { 0 } else { 8081 };
            let admin = admin.unwrap_or(SocketAddr::from(([127, 0, 0, 1], port)));
            control_runtime()?.block_on(demo(listen, admin))
        }
        Cmd::Passwd => passwd(),
        Cmd::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "txlb", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man => man_page(&mut std::io::stdout().lock()),
        Cmd::Schema => {
            print!("{}", include_str!("../contrib/txlb.schema.json"));
            Ok(())
        }
        Cmd::Fleet {
            command: FleetCmd::Push { config },
        } => {
            let revision = control_runtime()?.block_on(txlb::fleet_push(&config))?;
            println!(
                "{}: pushed to the fleet (configuration revision {revision})",
                config.display()
            );
            Ok(())
        }
    }
}

/// The main thread's runtime: controller, managers, admin, signals. The data path
/// has its own worker threads.
fn control_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("TXLB_LOG").unwrap_or_else(|_| "info".into())
}

fn init_stderr_logging() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Sets up logging; returns the log file, if logging goes to one, for reopening.
fn init_logging(config: &Config) -> Result<Option<txlb::logging::LogFile>> {
    match &config.logging.file {
        None => {
            init_stderr_logging();
            Ok(None)
        }
        Some(path) => {
            let file = txlb::logging::LogFile::open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_ansi(false)
                .with_writer(file.clone())
                .init();
            Ok(Some(file))
        }
    }
}

/// What `txlb run` keeps of its start: the file, its text as parsed (write-back
/// edits exactly that), the log file (`closeLog` and SIGUSR1 reopen it), and what
/// systemd handed over.
struct Boot {
    path: PathBuf,
    text: String,
    log_file: Option<txlb::logging::LogFile>,
    manager: ServiceManager,
}

/// Runs until SIGINT or SIGTERM; SIGHUP reloads the configuration file, SIGUSR1
/// reopens the log files.
async fn serve(boot: Boot, config: Config, workers: usize, grace: Duration) -> Result<()> {
    let Boot {
        path,
        text,
        log_file,
        manager,
    } = boot;
    let writeback = Arc::new(WriteBack::new(&path, text, config.clone()));
    let balancer = Balancer::builder(config)
        .workers(workers)
        .inherited_listeners(manager.inherited)
        .start()
        .await?;
    // Written by the SIGHUP task, shown by the admin plane.
    let reload_status = Arc::new(txlb::admin::ReloadStatus::new());
    // The one way logs are reopened: SIGUSR1 and the legacy `closeLog` alike.
    let reopen_logs: txlb::admin::ReopenLog = {
        let balancer = balancer.clone();
        Arc::new(move || {
            if let Some(file) = &log_file {
                file.reopen()?;
            }
            balancer.reopen_access_log()
        })
    };
    let hooks = admin_plane::Hooks {
        path: path.clone(),
        reopen_logs: reopen_logs.clone(),
        writeback: writeback.clone(),
        reload_status: reload_status.clone(),
        save_config: {
            let writeback = writeback.clone();
            Arc::new(move |running: &Config| writeback.save_reply(running))
        },
        logins: txlb::admin::Logins::new(),
    };
    let admin = match AdminPlane::start(&balancer.config(), &balancer, &hooks).await {
        Ok(admin) => admin,
        Err(error) => {
            balancer.shutdown(Duration::ZERO).await;
            return Err(error);
        }
    };
    // Shared with the SIGHUP task, which may move or restart the servers.
    let admin = Arc::new(tokio::sync::Mutex::new(Some(admin)));
    tracing::info!(config = %path.display(), "txlb running");
    let stop = CancellationToken::new();
    let signals = Signals::register()?;
    let notifier = manager.notifier;
    let _watchdog = start_watchdog(&notifier);
    tokio::spawn(reopen_logs_on_sigusr1(
        signals.usr1,
        reopen_logs,
        stop.clone(),
    ));
    // Every listener is bound (clients queue until accepted) and every signal has
    // its handler: tell systemd.
    notifier.ready("running");
    // Runs always: it reads its interval and enable flag from the running
    // configuration, so a reload can turn it on.
    tokio::spawn(writeback::run_config_check(
        writeback.clone(),
        balancer.clone(),
        stop.clone(),
    ));
    let reload = reload_on_sighup(
        balancer.clone(),
        (hooks, admin.clone()),
        stop.clone(),
        signals.hup,
        notifier.clone(),
    );
    tokio::spawn(reload);
    signals.stop.await;
    notifier.stopping();
    stop.cancel();
    tracing::info!(grace_secs = grace.as_secs_f64(), "shutting down");
    balancer.shutdown(grace).await;
    if let Some(admin) = admin.lock().await.take() {
        admin.stopped().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `txlb passwd`: a SHA-512-crypt hash of a password read without echo.
fn passwd() -> Result<()> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            bail!("the passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        bail!("empty password");
    }
    println!("{}", txlb::admin::hash_password(&password)?);
    Ok(())
}

async fn wait_for_stop_signal() -> Result<()> {
    stop_signal()?.await;
    Ok(())
}

/// Handles SIGTERM and SIGINT from now on; the future resolves at the first.
fn stop_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// SIGHUP: reads the file again and applies it as a whole, or refuses it as a
/// whole (the running configuration stays); either way the outcome is logged
/// and recorded for the admin page.
async fn reload_on_sighup(
    balancer: BalancerHandle,
    (hooks, admin): (
        admin_plane::Hooks,
        Arc<tokio::sync::Mutex<Option<AdminPlane>>>,
    ),
    stop: CancellationToken,
    mut hup: tokio::signal::unix::Signal,
    notifier: systemd::Notifier,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup.recv() => {}
        }
        notifier.reloading();
        let mut admin = admin.lock().await;
        let Some(admin) = admin.as_mut() else {
            return;
        };
        match reload(&balancer, &hooks, admin).await {
            Ok(changes) => {
                tracing::info!(config = %hooks.path.display(), %changes, "configuration reloaded");
                hooks.reload_status.succeeded();
                // Reloading the edited file resolves a write-back conflict: the
                // file now holds the running configuration and becomes the base
                // again (nothing is written: the save finds it adopted).
                if hooks.writeback.conflict().is_some() {
                    let (wb, running) = (hooks.writeback.clone(), balancer.config());
                    let _ = tokio::task::spawn_blocking(move || wb.save(&running)).await;
                }
            }
            Err(error) => {
                tracing::error!(%error, "reload refused");
                hooks.reload_status.failed(error);
            }
        }
        notifier.ready("running");
    }
}

/// One reload: the file is read, the admin plane's new addresses and
/// certificates prepared, the configuration applied, then the admin plane
/// moved or re-keyed as `<admin>` now says. Returns what changed.
async fn reload(
    balancer: &BalancerHandle,
    hooks: &admin_plane::Hooks,
    admin: &mut AdminPlane,
) -> Result<txlb::config::Changes, String> {
    // Reading and checking a big file takes a while: on the blocking pool, so
    // the admin plane (on this runtime) keeps answering meanwhile, and a panic
    // there refuses the reload instead of ending the process. What changed is
    // counted there too (linear, but over every host).
    let (path, running) = (hooks.path.clone(), balancer.config());
    let (config, changes) = tokio::task::spawn_blocking(move || {
        Config::from_path(&path).map(|config| {
            let changes = txlb::config::Changes::between(&running, &config);
            (config, changes)
        })
    })
    .await
    .map_err(|e| format!("reading the configuration failed: {e}"))?
    .map_err(|e| e.to_string())?;
    let prepared = admin
        .prepare(&config, hooks)
        .await
        .map_err(|e| error_text(&e))?;
    balancer
        .apply(Command::Replace(Box::new(config)))
        .await
        .map_err(|e| e.to_string())?;
    admin.commit(prepared, balancer, hooks).await.map_err(|e| {
        format!(
            "configuration applied, but the admin plane kept its old settings: {}",
            error_text(&e)
        )
    })?;
    Ok(changes)
}

// --- systemd, log rotation, man page ------------------------------------------

/// What the service manager hands over: where to send notifications, and the
/// listening sockets of socket activation.
struct ServiceManager {
    notifier: systemd::Notifier,
    inherited: Vec<std::net::TcpListener>,
}

/// The signals `txlb run` handles, registered before READY=1 so that none sent
/// after it can kill the process with its default action.
struct Signals {
    stop: std::pin::Pin<Box<dyn Future<Output = ()>>>,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            stop: Box::pin(stop_signal()?),
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }
}

/// Pings systemd's watchdog when `WatchdogSec=` is set, until the returned guard
/// is dropped: through the shutdown grace period too.
fn start_watchdog(notifier: &systemd::Notifier) -> Option<tokio_util::sync::DropGuard> {
    let timeout = systemd::watchdog_timeout().filter(|_| notifier.is_enabled())?;
    let stop = CancellationToken::new();
    tracing::info!(timeout_secs = timeout.as_secs_f64(), "systemd watchdog on");
    tokio::spawn(notifier.clone().run_watchdog(timeout, stop.clone()));
    Some(stop.drop_guard())
}

/// SIGUSR1 reopens the log file (logrotate's postrotate; the legacy `closeLog`).
async fn reopen_logs_on_sigusr1(
    mut usr1: tokio::signal::unix::Signal,
    reopen_logs: txlb::admin::ReopenLog,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = usr1.recv() => {}
        }
        match reopen_logs() {
            Ok(()) => tracing::info!("SIGUSR1: log file reopened"),
            Err(error) => tracing::error!(%error, "SIGUSR1: cannot reopen the log files"),
        }
    }
}

/// Writes txlb(1): clap's sections, every command with its options, then what an
/// operator looks for in a man page (signals, files, environment).
fn man_page(out: &mut dyn std::io::Write) -> Result<()> {
    let command = <Cli as clap::CommandFactory>::command();
    let about = "a TCP load balancer that reads txLoadBalancer's configuration";
    let man = clap_mangen::Man::new(command.clone().about(about));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in command.get_subcommands() {
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        writeln!(
            out,
            ".SS \"txlb {}\"\n{}",
            sub.get_name(),
            roff_text(&about)
        )?;
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            let mut names = Vec::new();
            if let Some(short) = arg.get_short() {
                names.push(format!("\\fB\\-{short}\\fR"));
            }
            if let Some(long) = arg.get_long() {
                names.push(format!("\\fB\\-\\-{}\\fR", roff_text(long)));
            }
            let value = arg.get_value_names().and_then(|v| v.first()).map_or_else(
                || arg.get_id().to_string().to_uppercase(),
                ToString::to_string,
            );
            let takes_value = arg.get_action().takes_values();
            let head = match (names.is_empty(), takes_value) {
                (true, _) => format!("\\fI{value}\\fR"),
                (false, true) => format!("{} \\fI{value}\\fR", names.join(", ")),
                (false, false) => names.join(", "),
            };
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let default = arg
                .get_default_values()
                .first()
                .map(|d| format!(" [default: {}]", d.to_string_lossy()))
                .unwrap_or_default();
            writeln!(
                out,
                ".TP\n{head}\n{}{}",
                roff_text(&help),
                roff_text(&default)
            )?;
        }
    }
    out.write_all(MAN_EXTRA.as_bytes())?;
    man.render_version_section(out)?;
    Ok(())
}

/// Escapes text for a roff line: backslashes, hyphens, and a leading dot or quote.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.chars().next() {
        Some('.' | '\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

/// The hand-written part of txlb(1).
const MAN_EXTRA: &str = r#".SH SIGNALS
.TP
\fBSIGHUP\fR
Reload the configuration file; a file that does not load is refused and the running configuration stays.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting, let open connections finish for the \fB\-\-grace\fR period, then close the rest.
.TP
\fBSIGUSR1\fR
Reopen the log file (after logrotate moved it away).
.SH ENVIRONMENT
.TP
\fBTXLB_LOG\fR
Log filter, e.g. \fBdebug\fR or \fBtxlb=debug\fR (default \fBinfo\fR).
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd for \fBType=notify\fR: txlb reports READY=1 once every listener is bound, RELOADING=1 and READY=1 around a reload, STOPPING=1 at shutdown, and pings the watchdog.
.TP
\fBLISTEN_FDS\fR, \fBLISTEN_PID\fR
Socket activation: a listener whose address matches a socket passed by systemd uses it instead of binding.
.SH FILES
.TP
\fI/etc/txlb/config.xml\fR
The configuration of the packaged service (txLoadBalancer XML; TOML when the name ends in .toml).
.TP
\fI/etc/txlb/config.xml.fleet\-cache\fR
Fleet mode: the last configuration received from etcd, served when txlb starts while etcd is unreachable.
.TP
\fI/var/log/txlb/\fR
Log files, when the configuration names one there; rotated by logrotate.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBlogrotate\fR(8)
"#;

// --- end of systemd, log rotation, man page -----------------------------------

/// `txlb check`: the summary, with names that do not resolve as warnings.
async fn check(path: &Path, config: &Config) -> Result<()> {
    println!("{}: OK", path.display());
    let mut warnings = 0;
    for service in &config.services {
        let listeners: Vec<String> = service.listeners.iter().map(ToString::to_string).collect();
        println!("service {}: listen {}", service.name, listeners.join(", "));
        for group in &service.groups {
            let enabled = if group.name == service.enabled_group {
                ", enabled"
            } else {
                ""
            };
            println!(
                "  group {} ({}{}): {} hosts",
                group.name,
                group.scheduler,
                enabled,
                group.hosts.len()
            );
            for host in &group.hosts {
                let note = match config.resolve_host(&host.address).await {
                    Ok(_) => String::new(),
                    Err(reason) => {
                        warnings += 1;
                        format!("  warning: {reason}")
                    }
                };
                println!(
                    "    {} {} weight {}{}",
                    host.name, host.address, host.weight, note
                );
            }
        }
    }
    for line in settings_summary(config) {
        println!("{line}");
    }
    for warning in settings_warnings(config) {
        println!("warning: {warning}");
    }
    if warnings > 0 {
        println!("{warnings} warning(s): hosts whose names do not resolve start bad");
    }
    Ok(())
}

/// Mistakes `txlb check` warns of outside the services: passwords that are
/// not hashes (nobody can log in), DES hashes (only 8 characters count), an
/// `authorizedKeys` file that is not there.
fn settings_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(admin) = &config.admin else {
        return warnings;
    };
    for user in &admin.users {
        match txlb::admin::crypt_scheme(&user.password_hash) {
            None => warnings.push(format!(
                "user {:?}: the password is not a crypt(3) hash, so no password matches it \
                 (txlb passwd makes one)",
                user.name
            )),
            Some("DES") => warnings.push(format!(
                "user {:?}: a traditional DES hash checks only the first 8 characters of a \
                 password (txlb passwd makes a SHA-512 one)",
                user.name
            )),
            Some(_) => {}
        }
    }
    if let Some(keys) = admin.ssh.as_ref().and_then(|s| s.authorized_keys.as_ref())
        && !keys.is_file()
    {
        warnings.push(format!(
            "authorizedKeys {}: no such file, so no key can log in until it exists",
            keys.display()
        ));
    }
    warnings
}

/// What `txlb check` says of everything but the services: the admin web server,
/// the SSH console, the users, the control socket, the fleet, the managers and
/// the logs, so an operator sees what the file turns on.
fn settings_summary(config: &Config) -> Vec<String> {
    let mut lines = Vec::new();
    let admin = config.admin.as_ref();
    let users = admin.map_or(&[][..], |a| a.users.as_slice());
    match admin.and_then(|a| a.web.as_ref()) {
        None => lines.push("admin web: not configured".to_string()),
        Some(web) if !web.enable => lines.push(format!("admin web: {} (disabled)", web.listen)),
        Some(web) => {
            let scheme = if web.secure { "https" } else { "http" };
            let mut line = format!("admin web: {scheme}://{}/", web.listen);
            if web.metrics_public {
                line.push_str(", /metrics without login");
            }
            if users.is_empty() {
                line.push_str(", no users: open without login on loopback only");
            }
            lines.push(line);
        }
    }
    match admin.and_then(|a| a.ssh.as_ref()) {
        None => lines.push("admin ssh: not configured".to_string()),
        Some(ssh) if !ssh.enable => lines.push(format!("admin ssh: {} (disabled)", ssh.listen)),
        Some(ssh) => {
            let keys = ssh.authorized_keys.as_ref().map_or_else(
                || "passwords only".to_string(),
                |k| format!("passwords and keys in {}", k.display()),
            );
            lines.push(format!("admin ssh: {}, {keys}", ssh.listen));
        }
    }
    if users.is_empty() {
        lines.push("users: none".to_string());
    } else {
        let names: Vec<String> = users
            .iter()
            .map(|u| {
                let access = match u.access {
                    txlb::config::Access::Full => "full",
                    txlb::config::Access::ReadOnly => "read-only",
                };
                format!("{} ({access})", u.name)
            })
            .collect();
        lines.push(format!("users: {}", names.join(", ")));
    }
    if let Some(control) = &config.control {
        lines.push(format!("control socket: {}", control.socket.display()));
    }
    if let Some(cluster) = &config.cluster {
        lines.push(format!(
            "fleet: instance {} under {} on {}",
            cluster.name,
            cluster.prefix,
            cluster.endpoints.join(", ")
        ));
    }
    let manager = &config.manager;
    let task = |name: &str, t: &txlb::config::ManagerTask| {
        if t.enable {
            format!("{name} every {} s", t.interval.as_secs_f64())
        } else {
            format!("{name} off")
        }
    };
    lines.push(format!(
        "managers: {}, {}, {}",
        task("hostCheck", &manager.host_check),
        task("heartbeat", &manager.heartbeat),
        task("configCheck", &manager.config_check)
    ));
    let log = |file: &Option<PathBuf>, none: &str| {
        file.as_ref()
            .map_or_else(|| none.to_string(), |f| f.display().to_string())
    };
    lines.push(format!(
        "logs: {}; access log: {}",
        log(&config.logging.file, "stderr"),
        log(&config.logging.access, "none")
    ));
    lines
}

/// `txlb demo`: three backends and a round-robin balancer on localhost, and the
/// admin web UI with a user `admin` whose random password is printed.
async fn demo(listen: SocketAddr, admin: SocketAddr) -> Result<()> {
    let mut backends = Vec::new();
    for i in 1..=3 {
        backends.push(txlb::demo::Backend::start(&format!("demo-{i}")).await?);
    }
    let password = txlb::demo::random_password();
    let mut config = txlb::demo::demo_config(listen, &backends);
    config.admin = Some(txlb::config::AdminConfig {
        web: None,
        ssh: None,
        users: vec![txlb::config::UserConfig {
            name: "admin".into(),
            password_hash: txlb::admin::hash_password(&password)?,
            access: txlb::config::Access::Full,
        }],
    });
    let balancer = match Balancer::builder(config).workers(1).start().await {
        Ok(balancer) => balancer,
        Err(error) => bail!("{error} (is another demo running? try --listen 127.0.0.1:0)"),
    };
    let admin_listener = match tokio::net::TcpListener::bind(admin).await {
        Ok(listener) => listener,
        Err(error) => {
            balancer.shutdown(Duration::ZERO).await;
            bail!("admin UI on {admin}: {error} (try --admin 127.0.0.1:0)");
        }
    };
    let settings = txlb::admin::AdminSettings {
        refresh: Duration::from_secs(1),
        ..Default::default()
    };
    let admin = txlb::admin::start(balancer.clone(), settings, admin_listener).await?;
    let local = balancer.local_addr("demo", None).unwrap_or(listen);
    println!("txlb demo: balancing http://{local}/ over three backends:");
    for backend in &backends {
        println!("  {} on {}", backend.name(), backend.addr());
    }
    println!("Try:   for i in 1 2 3 4; do curl -s http://{local}/; done");
    println!("Admin: {} (user admin, password {password})", admin.url());
    println!("Press Ctrl-C to stop.");
    wait_for_stop_signal().await?;
    balancer.shutdown(Duration::from_secs(2)).await;
    admin.stopped().await;
    Ok(())
}
