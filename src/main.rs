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
            init_logging(&loaded)?;
            let workers = workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let grace = Duration::from_secs_f64(grace.max(0.0));
            control_runtime()?.block_on(serve(config, text, loaded, workers, grace))
        }
        Cmd::Check { config } => {
            let loaded = Config::from_path(&config)?;
            control_runtime()?.block_on(check(&config, &loaded))
        }
        Cmd::Demo { listen } => {
            init_stderr_logging();
            control_runtime()?.block_on(demo(listen))
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

fn init_logging(config: &Config) -> Result<()> {
    match &config.logging.file {
        None => init_stderr_logging(),
        Some(path) => {
            let file = txlb::logging::LogFile::open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_ansi(false)
                .with_writer(file)
                .init();
        }
    }
    Ok(())
}

/// Runs until SIGINT or SIGTERM; SIGHUP reloads the configuration file.
async fn serve(
    path: PathBuf,
    text: String,
    config: Config,
    workers: usize,
    grace: Duration,
) -> Result<()> {
    let config_check = config.manager.config_check;
    let writeback = Arc::new(WriteBack::new(&path, text, config.clone()));
    let balancer = Balancer::builder(config).workers(workers).start().await?;
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
    tracing::info!("stopped");
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
