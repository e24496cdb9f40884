//! The `txlb` command: run a balancer from a configuration file, check one, or run
//! the demo. A thin layer over the library: parse arguments, set up logging, load
//! the configuration and call the library. It uses the library's public API
//! only. Beside it: `cli` (the arguments, also rendered by `cargo xtask` as the
//! man page and completions), `serve` (`txlb run` and its signals),
//! `admin_plane` (the admin web server and SSH console, moved at each reload)
//! and `systemd` (notifications, watchdog, socket activation).

mod admin_plane;
mod alloc;
mod cli;
mod serve;
mod systemd;
mod upgrade;

/// mimalloc keeps each size of allocation in its own pages, so the pages of
/// the tasks that parked connections left (see `txlb::proxy` parking) empty
/// out whole and go back to the kernel; glibc's heap keeps them, pinned by
/// the few live objects between them. Asked by size alone (`alloc`), so
/// that each object gets its own size's class. Wrapped to meter SSH `script` threads
/// (others pay one thread-local read per allocation).
#[cfg(feature = "ssh")]
#[global_allocator]
static GLOBAL: txlb::ssh::MeteredAlloc<alloc::Mimalloc> = txlb::ssh::MeteredAlloc(alloc::Mimalloc);
/// mimalloc, unwrapped without the SSH console's scripts to meter.
#[cfg(not(feature = "ssh"))]
#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

/// Hands pages back as soon as they empty (mimalloc waits 10 ms, and an idle
/// worker never comes back to finish), in 4 KiB pages: with transparent huge
/// pages a page goes back only when all 2 MiB around it are free. The option
/// number is the same in mimalloc 2 and 3 (`mimalloc.h`); `tests/data_path/parking.rs`
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
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cli::{Cli, Cmd, FleetCmd};
use txlb::Balancer;
use txlb::config::Config;
use txlb::config::writeback;

fn main() -> std::process::ExitCode {
    tune_allocator();
    // Read now: after a package upgrade replaced the binary, /proc/self/exe
    // names a deleted file, and the upgrade must start the path's new one.
    let started_as = upgrade::StartedAs::now();
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
    match run(cli, started_as) {
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

fn run(cli: Cli, started_as: upgrade::StartedAs) -> Result<()> {
    match cli.command {
        Cmd::Run {
            config,
            workers,
            grace,
        } => {
            let config = config.path();
            // SAFETY: still one thread (no runtime yet), and nothing took fds 3
            // and up: the upgrade's socket is 3 when the variable says so.
            let incoming = match unsafe { txlb::upgrade::Incoming::from_env() } {
                None => None,
                Some(Ok(incoming)) => Some(incoming),
                // The old process heard why and serves on.
                Some(Err(reason)) => bail!("upgrade: {reason}"),
            };
            // SAFETY: still one thread (no runtime yet), and nothing took fds 3 and up.
            let manager = unsafe { serve::ServiceManager::from_env() }?;
            // The text is kept: write-back edits exactly what was parsed. An
            // upgrade runs the old process's configuration (unsaved changes
            // too), its write-back base handed over with it.
            let (text, loaded) = match &incoming {
                None => writeback::load(&config)?,
                Some(handed) => match handed.config(&config) {
                    Ok(loaded) => (String::new(), loaded),
                    Err(reason) => {
                        if let Some(incoming) = incoming {
                            incoming.fail(&reason);
                        }
                        bail!("upgrade: {reason}");
                    }
                },
            };
            let log_file = init_logging(&loaded)?;
            let workers = workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let grace = Duration::from_secs_f64(grace.max(0.0));
            let boot = serve::Boot {
                path: config,
                text,
                log_file,
                manager,
                incoming,
                started_as,
            };
            control_runtime()?.block_on(serve::serve(boot, loaded, workers, grace))
        }
        Cmd::Upgrade {
            config,
            binary,
            ready_timeout,
            handoff_deadline,
        } => {
            let config = config.path();
            let valid = |s: f64| s.is_finite() && s >= 0.0;
            if !valid(ready_timeout) || !valid(handoff_deadline) {
                bail!("--ready-timeout and --handoff-deadline take seconds (0 or more)");
            }
            let binary = binary
                .map(|b| std::path::absolute(&b).with_context(|| b.display().to_string()))
                .transpose()?;
            let request = txlb::upgrade::request::Request {
                binary,
                ready_timeout,
                handoff_deadline,
            };
            let reply =
                control_runtime()?.block_on(txlb::upgrade::request::ask(&config, &request))?;
            match (reply.ok, reply.pid) {
                (true, Some(pid)) => {
                    println!(
                        "{}: upgraded: PID {pid} serves{}",
                        config.display(),
                        reply.message.map(|m| format!(" ({m})")).unwrap_or_default()
                    );
                    Ok(())
                }
                _ => bail!(
                    "upgrade failed (the running process serves on): {}",
                    reply.error.unwrap_or_else(|| "no reason given".into())
                ),
            }
        }
        Cmd::Check { config } => {
            let config = config.path();
            let loaded = Config::from_path(&config)?;
            let certificates = txlb::check::certificates(&loaded).map_err(anyhow::Error::msg)?;
            println!("{}: OK", config.display());
            print!(
                "{}",
                control_runtime()?.block_on(txlb::check::report(&loaded))
            );
            for line in certificates {
                println!("{line}");
            }
            Ok(())
        }
        Cmd::Demo { listen, admin } => {
            init_stderr_logging();
            let port = if listen.port() == 0 { 0 } else { 8081 };
            let admin = admin.unwrap_or(SocketAddr::from(([127, 0, 0, 1], port)));
            control_runtime()?.block_on(demo(listen, admin))
        }
        Cmd::Passwd => passwd(),
        Cmd::Schema => {
            print!("{}", include_str!("../../../contrib/txlb.schema.json"));
            Ok(())
        }
        Cmd::Fleet {
            command: FleetCmd::Push { config },
        } => {
            #[cfg(feature = "fleet")]
            {
                let revision = control_runtime()?.block_on(txlb::fleet_push(&config))?;
                println!(
                    "{}: pushed to the fleet (configuration revision {revision})",
                    config.display()
                );
                Ok(())
            }
            #[cfg(not(feature = "fleet"))]
            bail!(
                "{}: fleet mode is not built into this txlb (cargo feature \"fleet\")",
                config.display()
            )
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
    serve::stop_signal()?.await;
    balancer.shutdown(Duration::from_secs(2)).await;
    admin.stopped().await;
    Ok(())
}
