//! The `txlb` command: run a balancer from a configuration file, check one, or run
//! the demo. A thin layer over the library: parse arguments, set up logging, load
//! the configuration, start, and turn signals into shutdown and reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use txlb::config::Config;
use txlb::config::writeback::{self, WriteBack};
use txlb::control::Command;
use txlb::{Balancer, BalancerHandle};

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
        /// Configuration file (txLoadBalancer XML, or TOML when it ends in .toml).
        #[arg(short, long)]
        config: PathBuf,
        /// Data-path worker threads, each with its own copy of every listener
        /// (default: one per CPU). The control plane runs on the main thread.
        #[arg(long)]
        workers: Option<usize>,
        /// Seconds open connections may take to finish at shutdown.
        #[arg(long, default_value_t = 10.0)]
        grace: f64,
    },
    /// Validate a configuration file and print a summary.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run three demo backends and a balancer in front of them on localhost.
    Demo {
        /// Where the demo balancer listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page txlb(1), in roff.
    Man,
    /// Print the JSON Schema of the TOML configuration, for editors.
    Schema,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("txlb: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Run {
            config,
            workers,
            grace,
        } => {
            // SAFETY: still one thread (no runtime yet), and nothing took fds 3 and up.
            let inherited = unsafe { txlb::systemd::take_listen_fds() }?;
            let manager = ServiceManager {
                // A broken NOTIFY_SOCKET costs the notifications, not the service.
                notifier: txlb::systemd::Notifier::from_env().unwrap_or_else(|error| {
                    eprintln!("txlb: ignoring NOTIFY_SOCKET: {error}");
                    txlb::systemd::Notifier::default()
                }),
                inherited,
            };
            // The text is kept: write-back edits exactly what was parsed.
            let (text, loaded) = writeback::load(&config)?;
            let log_file = init_logging(&loaded)?;
            let workers = workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let grace = Duration::from_secs_f64(grace.max(0.0));
            let serve = serve(config, text, loaded, workers, grace, log_file, manager);
            control_runtime()?.block_on(serve)
        }
        Cmd::Check { config } => {
            let loaded = Config::from_path(&config)?;
            control_runtime()?.block_on(check(&config, &loaded))
        }
        Cmd::Demo { listen } => {
            init_stderr_logging();
            control_runtime()?.block_on(demo(listen))
        }
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

/// Runs until SIGINT or SIGTERM; SIGHUP reloads the configuration file, SIGUSR1
/// reopens the log file.
async fn serve(
    path: PathBuf,
    text: String,
    config: Config,
    workers: usize,
    grace: Duration,
    log_file: Option<txlb::logging::LogFile>,
    manager: ServiceManager,
) -> Result<()> {
    let config_check = config.manager.config_check;
    let writeback = Arc::new(WriteBack::new(&path, text, config.clone()));
    let balancer = Balancer::builder(config)
        .workers(workers)
        .inherited_listeners(manager.inherited)
        .start()
        .await?;
    tracing::info!(config = %path.display(), "txlb running");
    let stop = CancellationToken::new();
    let signals = Signals::register()?;
    let notifier = manager.notifier;
    let _watchdog = start_watchdog(&notifier);
    tokio::spawn(reopen_log_on_sigusr1(signals.usr1, log_file, stop.clone()));
    // Every listener is bound (clients queue until accepted) and every signal has
    // its handler: tell systemd.
    notifier.ready("running");
    if config_check.enable {
        let task = writeback::run_config_check(
            writeback,
            balancer.clone(),
            config_check.interval,
            stop.clone(),
        );
        tokio::spawn(task);
    }
    let reload = reload_on_sighup(
        path,
        balancer.clone(),
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
    tracing::info!("stopped");
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

async fn reload_on_sighup(
    path: PathBuf,
    balancer: BalancerHandle,
    stop: CancellationToken,
    mut hup: tokio::signal::unix::Signal,
    notifier: txlb::systemd::Notifier,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup.recv() => {}
        }
        notifier.reloading();
        // A bad file is reported and the running configuration stays.
        match Config::from_path(&path) {
            Err(error) => tracing::error!(%error, "reload refused"),
            Ok(config) => match balancer.apply(Command::Replace(Box::new(config))).await {
                Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
                Err(error) => tracing::error!(%error, "reload refused"),
            },
        }
        notifier.ready("running");
    }
}

// --- systemd, log rotation, man page ------------------------------------------

/// What the service manager hands over: where to send notifications, and the
/// listening sockets of socket activation.
struct ServiceManager {
    notifier: txlb::systemd::Notifier,
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
fn start_watchdog(notifier: &txlb::systemd::Notifier) -> Option<tokio_util::sync::DropGuard> {
    let timeout = txlb::systemd::watchdog_timeout().filter(|_| notifier.is_enabled())?;
    let stop = CancellationToken::new();
    tracing::info!(timeout_secs = timeout.as_secs_f64(), "systemd watchdog on");
    tokio::spawn(notifier.clone().run_watchdog(timeout, stop.clone()));
    Some(stop.drop_guard())
}

/// SIGUSR1 reopens the log file (logrotate's postrotate; the legacy `closeLog`).
async fn reopen_log_on_sigusr1(
    mut usr1: tokio::signal::unix::Signal,
    log_file: Option<txlb::logging::LogFile>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = usr1.recv() => {}
        }
        match &log_file {
            None => tracing::info!("SIGUSR1: logging to stderr, no log file to reopen"),
            Some(file) => match file.reopen() {
                Ok(()) => tracing::info!(file = %file.path().display(), "log file reopened"),
                Err(error) => {
                    tracing::error!(file = %file.path().display(), %error, "cannot reopen the log file")
                }
            },
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
                let note = match txlb::health::resolve(&host.address).await {
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
    if warnings > 0 {
        println!("{warnings} warning(s): hosts whose names do not resolve start bad");
    }
    Ok(())
}

/// `txlb demo`: three backends and a round-robin balancer on localhost.
async fn demo(listen: SocketAddr) -> Result<()> {
    let stop = CancellationToken::new();
    let mut backends = Vec::new();
    for i in 1..=3 {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        backends.push(
            txlb::demo::spawn_http_backend(&format!("demo-{i}"), any_port, stop.clone()).await?,
        );
    }
    let config = txlb::demo::demo_config(listen, &backends);
    let balancer = match Balancer::builder(config).workers(1).start().await {
        Ok(balancer) => balancer,
        Err(error) => bail!("{error} (is another demo running? try --listen 127.0.0.1:0)"),
    };
    let local = balancer.local_addr("demo", None).unwrap_or(listen);
    println!("txlb demo: balancing http://{local}/ over three backends:");
    for (i, addr) in backends.iter().enumerate() {
        println!("  demo-{} on {addr}", i + 1);
    }
    println!("Try:   for i in 1 2 3 4; do curl -s http://{local}/; done");
    println!("Press Ctrl-C to stop.");
    wait_for_stop_signal().await?;
    balancer.shutdown(Duration::from_secs(2)).await;
    stop.cancel();
    Ok(())
}
