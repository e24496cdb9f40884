//! `script`: txLoadBalancer's live interpreter, reborn as an embedded Rhai engine
//! whose functions are the console's commands. `host_down("svc", "g", "a")` runs
//! `host down svc g a`; `show_hosts("svc")` returns `show hosts svc --json` as Rhai
//! maps and arrays; `run("any console line")` returns its output. The same
//! read-only rule applies, and every change still goes through `Command`.
//!
//! A script is bounded: it runs on a thread of its own at low priority (never
//! on a runtime worker nor in tokio's blocking pool), at most [`MAX_SCRIPTS`]
//! at once, each counting as a session while it runs; it is stopped after its
//! wall time ([`SCRIPT_TIMEOUT`] by default), when it holds more than
//! [`MAX_SCRIPT_MEMORY`] (with [`MeteredAlloc`] as the global allocator, as in
//! the `txlb` binary), when its session ends, and at shutdown; Rhai's own limits
//! bound operations, depth, variables and each value's size; and `import`
//! reads no file.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, Position};

use super::commands::{self, COMMANDS, ConsoleError, Context, Outcome};
use super::memory::Meter;
pub use super::memory::MeteredAlloc;

/// Most Rhai operations one script may run.
pub const MAX_OPERATIONS: u64 = 50_000_000;
/// Longest script accepted, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;
/// Most memory one script may hold (its values, variables and output), in
/// bytes; counted by [`MeteredAlloc`].
pub const MAX_SCRIPT_MEMORY: usize = 64 * 1024 * 1024;
/// Scripts running at once (in the whole console); one more is refused.
pub const MAX_SCRIPTS: usize = 4;
/// How long a script may run (the default of `SshSettings::script_timeout`).
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most output a script may print, in bytes; the rest is cut. Also the
/// longest string a script may make.
const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Most variables alive at once, function parameters included.
const MAX_VARIABLES: usize = 1024;
/// Stack of a script thread (Rhai recurses on nested expressions and calls).
const SCRIPT_STACK: usize = 8 * 1024 * 1024;
/// Operations between two looks at the clock and the balancer's shutdown.
const CHECK_EVERY: u64 = 256;

/// Console commands that are not script functions (they talk to the terminal).
const NOT_IN_SCRIPTS: &[&str] = &["help", "exit", "watch stats", "user add", "script"];

type Call = Arc<dyn Fn(Vec<String>) -> Result<Dynamic, Box<EvalAltResult>> + Send + Sync>;

/// The scripts running in one console server.
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    /// How many run now; written by [`run`] and its threads' [`Slot`].
    running: AtomicUsize,
}

impl Scripts {
    pub(crate) fn new() -> Arc<Scripts> {
        Arc::new(Scripts::default())
    }
}

/// One of the [`MAX_SCRIPTS`] places, held by a script's thread until it ends.
struct Slot(Arc<Scripts>);

impl Slot {
    fn take(scripts: &Arc<Scripts>) -> Option<Slot> {
        let taken = scripts
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SCRIPTS).then_some(n + 1)
            });
        taken.ok().map(|_| Slot(scripts.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells the script's thread to stop when the waiting side goes away (the
/// session ended, or the console gave up on it).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `code`: what it printed (and its value, when not `()`), and the error
/// that stopped it, if one did. Dropping the future (its session ended) stops
/// the script at its next operation.
pub(crate) async fn run(ctx: &Context, code: String) -> (String, Option<ConsoleError>) {
    let refused = |e: String| (String::new(), Some(ConsoleError::Refused(e)));
    if code.len() > MAX_SCRIPT_BYTES {
        return refused(format!("script longer than {MAX_SCRIPT_BYTES} bytes"));
    }
    let Some(slot) = Slot::take(&ctx.scripts) else {
        return refused(format!(
            "{MAX_SCRIPTS} scripts are running already; try again when one has ended"
        ));
    };
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let limits = Limits {
        deadline: Instant::now() + ctx.settings.script_timeout,
        timeout: ctx.settings.script_timeout,
        stop,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ctx = ctx.clone();
    // Counts as a session until the thread ends, even after its session has.
    let session = ctx.session.token();
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("txlb-script".into())
        .stack_size(SCRIPT_STACK)
        .spawn(move || {
            let _held = (slot, session);
            lower_priority();
            let result = eval(ctx, runtime, &code, limits);
            let _ = tx.send(result);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no thread for a script");
        return refused("no thread for the script; try again later".into());
    }
    rx.await
        .unwrap_or_else(|_| refused("the script failed".into()))
}

/// Makes the current thread yield to the data path's workers (nice 19).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on this thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// When a script must stop, besides Rhai's own limits.
struct Limits {
    deadline: Instant,
    timeout: Duration,
    /// Set when the session waiting for the script has gone.
    stop: Arc<AtomicBool>,
}

/// The engine with the console's limits: sizes, depths, variables, no modules.
fn engine(limits: Limits, shutdown: tokio_util::sync::CancellationToken) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(64)
        .set_max_expr_depths(64, 64)
        .set_max_variables(MAX_VARIABLES)
        .set_max_functions(256)
        .set_max_string_size(MAX_OUTPUT_BYTES)
        .set_max_array_size(100_000)
        .set_max_map_size(100_000)
        // `import` reads no file: every path is "not found" alike.
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    let meter = Meter::start();
    engine.on_progress(move |ops| {
        if limits.stop.load(Ordering::Relaxed) {
            return Some(Dynamic::from("its session ended"));
        }
        if let Some(meter) = &meter
            && meter.held() > MAX_SCRIPT_MEMORY as isize
        {
            return Some(Dynamic::from(format!(
                "it held more than {} MiB of memory",
                MAX_SCRIPT_MEMORY >> 20
            )));
        }
        if ops % CHECK_EVERY == 0 {
            if Instant::now() >= limits.deadline {
                return Some(Dynamic::from(format!(
                    "it ran longer than {} s",
                    limits.timeout.as_secs_f64()
                )));
            }
            if shutdown.is_cancelled() {
                return Some(Dynamic::from("the balancer is shutting down"));
            }
        }
        None
    });
    engine
}

fn eval(
    ctx: Context,
    runtime: tokio::runtime::Handle,
    code: &str,
    limits: Limits,
) -> (String, Option<ConsoleError>) {
    let output = Arc::new(Mutex::new(String::new()));
    let mut engine = engine(limits, ctx.handle.shutdown_token());
    let sink = output.clone();
    engine.on_print(move |text| {
        let mut out = sink.lock().unwrap_or_else(|p| p.into_inner());
        if out.len() < MAX_OUTPUT_BYTES {
            out.push_str(text);
            out.push('\n');
        }
    });
    let sink = output.clone();
    engine.on_debug(move |text, _, _| {
        let mut out = sink.lock().unwrap_or_else(|p| p.into_inner());
        if out.len() < MAX_OUTPUT_BYTES {
            out.push_str(text);
            out.push('\n');
        }
    });
    register(&mut engine, &ctx, &runtime);
    let result = engine.eval::<Dynamic>(code);
    // The engine (and with it the meter) goes before the output is copied.
    drop(engine);
    let mut out = std::mem::take(&mut *output.lock().unwrap_or_else(|p| p.into_inner()));
    match result {
        Ok(value) => {
            if !value.is_unit() {
                out.push_str(&value.to_string());
                out.push('\n');
            }
            (out, None)
        }
        Err(e) => {
            let reason = match *e {
                EvalAltResult::ErrorTerminated(why, _) => format!("script stopped: {why}"),
                e => format!("script: {e}"),
            };
            (out, Some(ConsoleError::Refused(reason)))
        }
    }
}

/// Runs one console line for a script: its output, or an error Rhai can catch.
fn console_line(
    ctx: &Context,
    runtime: &tokio::runtime::Handle,
    words: Vec<String>,
) -> Result<String, Box<EvalAltResult>> {
    let fail = |e: ConsoleError| -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(e.to_string()),
            Position::NONE,
        ))
    };
    let parsed = commands::parse(&words).map_err(fail)?;
    match runtime
        .block_on(commands::run(ctx, &parsed))
        .map_err(fail)?
    {
        Outcome::Text(text) => Ok(text),
        _ => Err(fail(ConsoleError::Usage(format!(
            "{} cannot run in a script",
            parsed.spec.name()
        )))),
    }
}

/// `run(LINE)`, and one function per command: `host_down(SERVICE, GROUP, HOST)`,
/// `show_stats()` (parsed JSON), … with each arity the command accepts.
fn register(engine: &mut Engine, ctx: &Context, runtime: &tokio::runtime::Handle) {
    {
        let (ctx, runtime) = (ctx.clone(), runtime.clone());
        engine.register_fn(
            "run",
            move |line: &str| -> Result<String, Box<EvalAltResult>> {
                let commands = commands::split_line(line).map_err(|e| e.to_string())?;
                let mut out = String::new();
                for words in commands {
                    out.push_str(&console_line(&ctx, &runtime, words)?);
                }
                Ok(out)
            },
        );
    }
    for spec in COMMANDS {
        if NOT_IN_SCRIPTS.contains(&spec.name().as_str()) {
            continue;
        }
        let json = spec.flags.contains(&"--json");
        let (ctx, runtime) = (ctx.clone(), runtime.clone());
        let call: Call = Arc::new(move |args: Vec<String>| {
            let mut words: Vec<String> = spec.words.iter().map(|w| w.to_string()).collect();
            words.extend(args);
            if json {
                words.push("--json".into());
            }
            let text = console_line(&ctx, &runtime, words)?;
            if json {
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| e.to_string())?;
                rhai::serde::to_dynamic(value)
            } else {
                Ok(Dynamic::from(text))
            }
        });
        let name = spec.words.join("_");
        for arity in spec.required..=spec.args.len() {
            register_arity(engine, &name, arity, call.clone());
        }
    }
}

fn register_arity(engine: &mut Engine, name: &str, arity: usize, call: Call) {
    let s = |d: Dynamic| d.to_string();
    match arity {
        0 => {
            engine.register_fn(name, move || call(vec![]));
        }
        1 => {
            engine.register_fn(name, move |a: Dynamic| call(vec![s(a)]));
        }
        2 => {
            engine.register_fn(name, move |a: Dynamic, b: Dynamic| call(vec![s(a), s(b)]));
        }
        3 => {
            engine.register_fn(name, move |a: Dynamic, b: Dynamic, c: Dynamic| {
                call(vec![s(a), s(b), s(c)])
            });
        }
        4 => {
            engine.register_fn(
                name,
                move |a: Dynamic, b: Dynamic, c: Dynamic, d: Dynamic| {
                    call(vec![s(a), s(b), s(c), s(d)])
                },
            );
        }
        5 => {
            engine.register_fn(
                name,
                move |a: Dynamic, b: Dynamic, c: Dynamic, d: Dynamic, e: Dynamic| {
                    call(vec![s(a), s(b), s(c), s(d), s(e)])
                },
            );
        }
        _ => {}
    }
}

/// Names of the script functions, for `help script`.
pub fn function_names() -> Vec<String> {
    let mut names: Vec<String> = COMMANDS
        .iter()
        .filter(|s| !NOT_IN_SCRIPTS.contains(&s.name().as_str()))
        .map(|s| s.words.join("_"))
        .collect();
    names.push("run".into());
    names
}
