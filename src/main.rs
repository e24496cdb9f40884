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
    /// print its SHA-512-crypt hash for `<user password="…">`.
    Passwd,
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
            };
            control_runtime()?.block_on(serve(boot, loaded, workers, grace))
        }
        Cmd::Check { config } => {
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

/// Sets up logging; returns the log file, if logging goes to one, for `closeLog`.
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
/// edits exactly that), and the log file (`closeLog` reopens it).
struct Boot {
    path: PathBuf,
    text: String,
    log_file: Option<txlb::logging::LogFile>,
}

/// Runs until SIGINT or SIGTERM; SIGHUP reloads the configuration file.
async fn serve(boot: Boot, config: Config, workers: usize, grace: Duration) -> Result<()> {
    let Boot {
        path,
        text,
        log_file,
    } = boot;
    let config_check = config.manager.config_check;
    let writeback = Arc::new(WriteBack::new(&path, text, config.clone()));
    let web = config
        .admin
        .as_ref()
        .and_then(|a| a.web.clone())
        .filter(|w| w.enable);
    let ssh = config
        .admin
        .as_ref()
        .and_then(|a| a.ssh.clone())
        .filter(|s| s.enable);
    let balancer = Balancer::builder(config).workers(workers).start().await?;
    let ssh_log_file = log_file.clone();
    let admin = match web {
        None => None,
        Some(web) => match start_admin(&balancer, &web, &path, log_file, writeback.clone()).await {
            Ok(server) => Some(server),
            Err(error) => {
                balancer.shutdown(Duration::ZERO).await;
                return Err(error);
            }
        },
    };
    let ssh = match ssh {
        None => None,
        Some(ssh) => match start_ssh(&balancer, &ssh, &path, ssh_log_file, writeback.clone()).await
        {
            Ok(server) => Some(server),
            Err(error) => {
                balancer.shutdown(Duration::ZERO).await;
                return Err(error);
            }
        },
    };
    tracing::info!(config = %path.display(), "txlb running");
    let stop = CancellationToken::new();
    if config_check.enable {
        let task = writeback::run_config_check(
            writeback,
            balancer.clone(),
            config_check.interval,
            stop.clone(),
        );
        tokio::spawn(task);
    }
    tokio::spawn(reload_on_sighup(path, balancer.clone(), stop.clone()));
    wait_for_stop_signal().await?;
    stop.cancel();
    tracing::info!(grace_secs = grace.as_secs_f64(), "shutting down");
    balancer.shutdown(grace).await;
    if let Some(admin) = admin {
        admin.stopped().await;
    }
    if let Some(ssh) = ssh {
        ssh.stopped().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts the admin web server of `<admin><web>`: HTTPS when `secure`, `closeLog`
/// reopening the log file, `saveConfig` writing the configuration file.
async fn start_admin(
    balancer: &BalancerHandle,
    web: &txlb::config::AdminWebConfig,
    path: &Path,
    log_file: Option<txlb::logging::LogFile>,
    writeback: Arc<WriteBack>,
) -> Result<txlb::admin::AdminServer> {
    let mut settings = txlb::admin::AdminSettings::from_web(web);
    if web.secure {
        settings.tls = Some(txlb::admin::tls_server_config(web, Some(path))?);
    }
    settings.reopen_log =
        log_file.map(|file| Arc::new(move || file.reopen()) as txlb::admin::ReopenLog);
    settings.save_config = Some(save_hook(writeback));
    let listener = txlb::admin::bind(&web.listen).await?;
    Ok(txlb::admin::start(balancer.clone(), settings, listener).await?)
}

/// saveConfig / `config save`: the same comment-keeping write-back as configCheck.
fn save_hook(writeback: Arc<WriteBack>) -> txlb::admin::SaveConfig {
    Arc::new(move |running: &Config| match writeback.save(running) {
        Ok(outcome) => Ok(format!(
            "configuration saved to {} ({outcome:?})",
            writeback.path().display()
        )),
        Err(error) => Err(error.to_string()),
    })
}

/// Starts the SSH console of `<admin><ssh>`: host key kept next to the
/// configuration (or at `hostKey`), `log reopen` and `config save` hooks.
async fn start_ssh(
    balancer: &BalancerHandle,
    ssh: &txlb::config::AdminSshConfig,
    path: &Path,
    log_file: Option<txlb::logging::LogFile>,
    writeback: Arc<WriteBack>,
) -> Result<txlb::ssh::SshServer> {
    let mut settings = txlb::ssh::SshSettings::from_config(ssh, Some(path))?;
    settings.reopen_log =
        log_file.map(|file| Arc::new(move || file.reopen()) as txlb::admin::ReopenLog);
    settings.save_config = Some(save_hook(writeback));
    let listener = txlb::ssh::bind(&ssh.listen).await?;
    Ok(txlb::ssh::start(balancer.clone(), settings, listener).await?)
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
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

async fn reload_on_sighup(path: PathBuf, balancer: BalancerHandle, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup.recv() => {}
        }
        // A bad file is reported and the running configuration stays.
        match Config::from_path(&path) {
            Err(error) => tracing::error!(%error, "reload refused"),
            Ok(config) => match balancer.apply(Command::Replace(Box::new(config))).await {
                Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
                Err(error) => tracing::error!(%error, "reload refused"),
            },
        }
    }
}

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

/// `txlb demo`: three backends and a round-robin balancer on localhost, and the
/// admin web UI with a user `admin` whose random password is printed.
async fn demo(listen: SocketAddr, admin: SocketAddr) -> Result<()> {
    let stop = CancellationToken::new();
    let mut backends = Vec::new();
    for i in 1..=3 {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        backends.push(
            txlb::demo::spawn_http_backend(&format!("demo-{i}"), any_port, stop.clone()).await?,
        );
    }
    let password = demo_password();
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
    for (i, addr) in backends.iter().enumerate() {
        println!("  demo-{} on {addr}", i + 1);
    }
    println!("Try:   for i in 1 2 3 4; do curl -s http://{local}/; done");
    println!("Admin: {} (user admin, password {password})", admin.url());
    println!("Press Ctrl-C to stop.");
    wait_for_stop_signal().await?;
    balancer.shutdown(Duration::from_secs(2)).await;
    admin.stopped().await;
    stop.cancel();
    Ok(())
}

/// A random 16-character password for the demo's admin user.
fn demo_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    txlb::admin::random_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}
