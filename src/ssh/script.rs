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
//! reads no file. Rhai's built-ins that could make a value far larger than
//! their inputs in one call (`replace`, `split`, `to_chars`, `pad`, printing
//! arrays and maps, whose escaped keys Rhai does not count) are
//! replaced by versions that count the result first, and those that swallow
//! their callback's errors (`sort`, `dedup`) by versions that stop with them,
//! so no single call can outgrow the limits or outlive the wall time. A script
//! uses at most [`CPU_SHARE`] of a core: past it, it sleeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FnPtr, INT, ImmutableString, NativeCallContext, Position,
};

use super::commands::{self, COMMANDS, ConsoleError, Context, Outcome};

use super::memory::Meter;
pub use super::memory::MeteredAlloc;
pub use super::slots::MAX_SCRIPTS;
use super::slots::Slot;

/// Most Rhai operations one script may run.
pub const MAX_OPERATIONS: u64 = 50_000_000;
/// Longest script accepted, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;
/// Most memory one script may hold (its values, variables and output), in
/// bytes; counted by [`MeteredAlloc`].
pub const MAX_SCRIPT_MEMORY: usize = 64 * 1024 * 1024;
/// How long a script may run (the default of `SshSettings::script_timeout`).
pub const SCRIPT_TIMEOUT: Duration = crate::config::DEFAULT_SCRIPT_TIMEOUT;
/// Most output a script may print, in bytes; the rest is cut. Also the
/// longest string a script may make.
const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Most elements of one array or map.
const MAX_ELEMENTS: usize = 100_000;
/// Share of one core a script may use, so that the four scripts allowed at
/// once take at most 0.4 of a core from the data path (nice 19 alone does not
/// keep them off it: they share the process's CPU).
pub const CPU_SHARE: f64 = 0.1;
/// Wall time between two looks at a script's CPU time.
const PACE_EVERY: Duration = Duration::from_millis(5);
/// Longest sleep between two looks at the stop flag and the wall time.
const PACE_NAP: Duration = Duration::from_millis(20);
/// Most variables alive at once, function parameters included.
const MAX_VARIABLES: usize = 1024;
/// Stack of a script thread (Rhai recurses on nested expressions and calls).
const SCRIPT_STACK: usize = 8 * 1024 * 1024;
/// Operations between two looks at the balancer's shutdown.
const CHECK_EVERY: u64 = 256;

type Call = Arc<dyn Fn(Vec<String>) -> Result<Dynamic, Box<EvalAltResult>> + Send + Sync>;

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
        refused: Refused::default(),
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
    /// Why a built-in refused to go on where Rhai ignores its errors (its
    /// printing of arrays and maps): the script stops at its next operation.
    refused: Refused,
}

/// See [`Limits::refused`].
type Refused = Arc<Mutex<Option<String>>>;

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
        .set_max_array_size(MAX_ELEMENTS)
        .set_max_map_size(MAX_ELEMENTS)
        // `import` reads no file: every path is "not found" alike.
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    bound_builtins(&mut engine, &limits.refused);
    let meter = Meter::start();
    let pace = Pace::start();
    engine.on_progress(move |ops| {
        pace.keep(&limits, &shutdown);
        if let Some(why) = lock(&limits.refused).take() {
            return Some(Dynamic::from(why));
        }
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
        // At every operation: one operation may be a long built-in call.
        if Instant::now() >= limits.deadline {
            return Some(Dynamic::from(format!(
                "it ran longer than {} s",
                limits.timeout.as_secs_f64()
            )));
        }
        if ops % CHECK_EVERY == 0 && shutdown.is_cancelled() {
            return Some(Dynamic::from("the balancer is shutting down"));
        }
        None
    });
    engine
}

/// Keeps a script's thread under [`CPU_SHARE`] of a core: every
/// [`PACE_EVERY`] of wall time it compares the thread's CPU time with the wall
/// time since the script started, and sleeps off the excess.
struct Pace {
    started: Instant,
    cpu_at_start: Duration,
    /// Nanoseconds after `started` of the next look at the CPU time.
    next: std::sync::atomic::AtomicU64,
}

impl Pace {
    fn start() -> Pace {
        Pace {
            started: Instant::now(),
            cpu_at_start: thread_cpu_time().unwrap_or_default(),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Sleeps while this thread has used more than its share, waking for the
    /// stop flag, the deadline and the balancer's shutdown.
    fn keep(&self, limits: &Limits, shutdown: &tokio_util::sync::CancellationToken) {
        let wall = self.started.elapsed();
        if (wall.as_nanos() as u64) < self.next.load(Ordering::Relaxed) {
            return;
        }
        self.next
            .store((wall + PACE_EVERY).as_nanos() as u64, Ordering::Relaxed);
        let Some(cpu) = thread_cpu_time() else {
            return;
        };
        let earned = (cpu.saturating_sub(self.cpu_at_start)).div_f64(CPU_SHARE);
        let mut owed = earned.saturating_sub(wall);
        while !owed.is_zero()
            && !limits.stop.load(Ordering::Relaxed)
            && Instant::now() < limits.deadline
            && !shutdown.is_cancelled()
        {
            let nap = owed.min(PACE_NAP);
            std::thread::sleep(nap);
            owed -= nap;
        }
    }
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

type Refusal = Box<EvalAltResult>;

fn refuse(why: String) -> Refusal {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(why),
        Position::NONE,
    ))
}

/// Refuses a string of `bytes` made by `call`.
fn string_fits(call: &str, bytes: usize) -> Result<(), Refusal> {
    if bytes > MAX_OUTPUT_BYTES {
        return Err(refuse(format!(
            "{call} would make a string of {bytes} bytes, more than the {MAX_OUTPUT_BYTES} a script may hold"
        )));
    }
    Ok(())
}

/// Refuses an array of `elements` made by `call`.
fn array_fits(call: &str, elements: usize) -> Result<(), Refusal> {
    if elements > MAX_ELEMENTS {
        return Err(refuse(format!(
            "{call} would make an array of {elements} elements, more than the {MAX_ELEMENTS} a script may hold"
        )));
    }
    Ok(())
}

/// `string.replace(find, with)`, its size counted before it is made.
fn replace(string: &mut ImmutableString, find: &str, with: &str) -> Result<(), Refusal> {
    if string.is_empty() {
        return Ok(());
    }
    let found = if find.is_empty() {
        string.chars().count() + 1
    } else {
        string.matches(find).count()
    };
    let bytes =
        (string.len() - found * find.len()).saturating_add(found.saturating_mul(with.len()));
    string_fits("replace", bytes)?;
    *string = string.replace(find, with).into();
    Ok(())
}

/// `string.pad(len, padding)`, its size counted before it is made.
fn pad(string: &mut ImmutableString, len: INT, padding: &str) -> Result<(), Refusal> {
    let have = string.chars().count();
    let Ok(len) = usize::try_from(len) else {
        return Ok(());
    };
    if len <= have || padding.is_empty() {
        return Ok(());
    }
    // Whole copies of `padding`, then the first characters of one more.
    let per_copy = padding.chars().count();
    let (copies, rest) = ((len - have) / per_copy, (len - have) % per_copy);
    let tail = padding
        .char_indices()
        .nth(rest)
        .map_or(padding.len(), |(at, _)| at);
    let added = copies.saturating_mul(padding.len()).saturating_add(tail);
    string_fits("pad", string.len().saturating_add(added))?;
    let p = string.make_mut();
    p.push_str(&padding.repeat(copies));
    p.push_str(&padding[..tail]);
    Ok(())
}

/// How many pieces splitting `string` at `delimiter` makes (as `str::split`).
fn pieces(string: &str, delimiter: &str) -> usize {
    if delimiter.is_empty() {
        string.chars().count() + 2
    } else {
        string.matches(delimiter).count() + 1
    }
}

/// `string.split(…)` and `split_rev(…)` with at most `segments` pieces:
/// counted first, then made by `split`.
fn split<'a, I: Iterator<Item = &'a str>>(
    call: &str,
    string: &'a ImmutableString,
    delimiter: &str,
    segments: Option<INT>,
    split: impl FnOnce(&'a str) -> I,
) -> Result<Array, Refusal> {
    let one = || Ok(vec![string.clone().into()]);
    if string.is_empty() || (!delimiter.is_empty() && !string.contains(delimiter)) {
        return one();
    }
    let mut count = pieces(string, delimiter);
    if let Some(n) = segments {
        if n <= 1 {
            return one();
        }
        count = count.min(usize::try_from(n).unwrap_or(usize::MAX));
    }
    array_fits(call, count)?;
    Ok(split(string.as_str()).map(Into::into).collect())
}

/// Calls `comparer` as a sort's or a dedup's does, keeping the first error.
fn compare(
    ctx: &NativeCallContext,
    comparer: &FnPtr,
    failed: &mut Option<Refusal>,
    x: &Dynamic,
    y: &Dynamic,
) -> Option<Dynamic> {
    if failed.is_some() {
        return None;
    }
    match comparer.call_raw(ctx, None, [x.clone(), y.clone()]) {
        Ok(v) => Some(v),
        Err(e) => {
            *failed = Some(e);
            None
        }
    }
}

/// `array.sort(comparer)`: Rhai's, except that the comparer's errors (the
/// stop of the script among them) end the sort.
fn sort(ctx: NativeCallContext, array: &mut Array, comparer: FnPtr) -> Result<(), Refusal> {
    use std::cmp::Ordering as Order;
    let mut failed = None;
    let sorted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        array.sort_by(|x, y| {
            let Some(v) = compare(&ctx, &comparer, &mut failed, x, y) else {
                return Order::Equal;
            };
            match (v.as_int(), v.as_bool()) {
                (Ok(n), _) => n.cmp(&0),
                (_, Ok(true)) => Order::Less,
                (_, Ok(false)) => Order::Greater,
                _ => x.type_id().cmp(&y.type_id()),
            }
        })
    }));
    if let Some(e) = failed {
        return Err(e);
    }
    sorted.map_err(|_| refuse("error in comparer for sorting".into()))
}

/// `array.dedup(comparer)`: Rhai's, except that the comparer's errors end it.
fn dedup(ctx: NativeCallContext, array: &mut Array, comparer: FnPtr) -> Result<(), Refusal> {
    let mut failed = None;
    array.dedup_by(|x, y| {
        compare(&ctx, &comparer, &mut failed, y, x).is_some_and(|v| v.as_bool().unwrap_or(false))
    });
    failed.map_or(Ok(()), Err)
}

/// Roughly how long `value` is when printed or made JSON (Rhai shows strings
/// and map keys escaped, up to 5 bytes a byte, and blob bytes as up to 4).
fn printed_size(value: &Dynamic) -> usize {
    let quoted = |s: &str| 2 + s.chars().map(|c| c.escape_debug().len()).sum::<usize>();
    if let Some(s) = value.read_lock::<ImmutableString>() {
        quoted(&s)
    } else if let Some(a) = value.read_lock::<Array>() {
        a.iter().map(|v| printed_size(v) + 2).sum::<usize>() + 2
    } else if let Some(m) = value.read_lock::<rhai::Map>() {
        m.iter()
            .map(|(k, v)| quoted(k) + 4 + printed_size(v))
            .sum::<usize>()
            + 3
    } else if let Some(b) = value.read_lock::<rhai::Blob>() {
        4 * b.len() + 2
    } else {
        64
    }
}

/// `print`, `to_string`, `debug` and `to_debug` of an array or a map: Rhai's
/// format, its size counted before it is made (a map's keys are not in
/// Rhai's size limits, and escaping multiplies them).
fn printed(ctx: &NativeCallContext, value: Dynamic, refused: &Refused) -> ImmutableString {
    // Rhai prints the value itself when `to_string` fails: the refusal goes
    // to the progress callback, which stops the script.
    if let Err(e) = string_fits("printing", printed_size(&value)) {
        if let EvalAltResult::ErrorRuntime(why, _) = *e {
            *lock(refused) = Some(why.to_string());
        }
        return ImmutableString::new();
    }
    let debug = |v: &Dynamic| -> String {
        ctx.call_native_fn::<ImmutableString>("to_debug", (v.clone(),))
            .map_or_else(|_| format!("{v:?}"), |s| s.to_string())
    };
    let text = if let Some(a) = value.read_lock::<Array>() {
        let items: Vec<String> = a.iter().map(debug).collect();
        format!("[{}]", items.join(", "))
    } else if let Some(m) = value.read_lock::<rhai::Map>() {
        let items: Vec<String> = m
            .iter()
            .map(|(k, v)| format!("{k:?}: {}", debug(v)))
            .collect();
        format!("#{{{}}}", items.join(", "))
    } else {
        value.to_string()
    };
    text.into()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers over Rhai's built-ins (functions registered on the engine come
/// before its packages) the versions that bound their result before making it
/// and pass their callbacks' errors on. Rhai checks the others before
/// allocating (`blob`, array and blob `pad`) or makes results no larger than
/// a few times their inputs (`+`, `extract`, `zip`, `to_upper`).
fn bound_builtins(engine: &mut Engine, refused: &Refused) {
    type S = ImmutableString;
    let c = |c: char| c.to_string();
    engine
        .register_fn("replace", |s: &mut S, f: &str, w: &str| replace(s, f, w))
        .register_fn("replace", move |s: &mut S, f: &str, w: char| {
            replace(s, f, &c(w))
        })
        .register_fn("replace", move |s: &mut S, f: char, w: &str| {
            replace(s, &c(f), w)
        })
        .register_fn("replace", move |s: &mut S, f: char, w: char| {
            replace(s, &c(f), &c(w))
        })
        .register_fn("pad", |s: &mut S, len: INT, p: &str| pad(s, len, p))
        .register_fn("pad", move |s: &mut S, len: INT, p: char| {
            pad(s, len, &c(p))
        })
        .register_fn("to_chars", |s: S| -> Result<Array, Refusal> {
            array_fits("to_chars", s.chars().count())?;
            Ok(s.chars().map(Into::into).collect())
        })
        .register_fn("split", |s: S| -> Result<Array, Refusal> {
            if s.is_empty() {
                return Ok(vec![s.into()]);
            }
            array_fits("split", s.split_whitespace().count())?;
            Ok(s.split_whitespace().map(Into::into).collect())
        })
        .register_fn("split", |s: S, d: &str| {
            split("split", &s, d, None, |s| s.split(d))
        })
        .register_fn("split", |s: S, d: &str, n: INT| {
            split("split", &s, d, Some(n), |s| s.splitn(n.max(1) as usize, d))
        })
        .register_fn("split", move |s: S, d: char| {
            split("split", &s, &c(d), None, |s| s.split(d))
        })
        .register_fn("split", move |s: S, d: char, n: INT| {
            split("split", &s, &c(d), Some(n), |s| {
                s.splitn(n.max(1) as usize, d)
            })
        })
        .register_fn("split_rev", |s: S, d: &str| {
            split("split_rev", &s, d, None, |s| s.rsplit(d))
        })
        .register_fn("split_rev", |s: S, d: &str, n: INT| {
            split("split_rev", &s, d, Some(n), |s| {
                s.rsplitn(n.max(1) as usize, d)
            })
        })
        .register_fn("split_rev", move |s: S, d: char| {
            split("split_rev", &s, &c(d), None, |s| s.rsplit(d))
        })
        .register_fn("split_rev", move |s: S, d: char, n: INT| {
            split("split_rev", &s, &c(d), Some(n), |s| {
                s.rsplitn(n.max(1) as usize, d)
            })
        })
        .register_fn("sort", sort)
        .register_fn("sort_by", sort)
        .register_fn("dedup", dedup);
    engine.register_fn("to_json", |m: rhai::Map| -> Result<String, Refusal> {
        let value = Dynamic::from_map(m);
        string_fits("to_json", printed_size(&value))?;
        Ok(value
            .read_lock::<rhai::Map>()
            .map(|m| rhai::format_map_as_json(&m))
            .unwrap_or_default())
    });
    for name in ["print", "to_string", "debug", "to_debug"] {
        let (r1, r2) = (refused.clone(), refused.clone());
        engine
            .register_fn(name, move |ctx: NativeCallContext, a: Array| {
                printed(&ctx, Dynamic::from_array(a), &r1)
            })
            .register_fn(name, move |ctx: NativeCallContext, m: rhai::Map| {
                printed(&ctx, Dynamic::from_map(m), &r2)
            });
    }
}

/// Runs `code` on `engine`; a refusal Rhai ignored stops it all the same.
fn evaluate(engine: &Engine, code: &str, refused: &Refused) -> Result<Dynamic, Box<EvalAltResult>> {
    let result = engine.eval::<Dynamic>(code);
    match lock(refused).take() {
        Some(why) => Err(EvalAltResult::ErrorTerminated(why.into(), Position::NONE).into()),
        None => result,
    }
}

fn eval(
    ctx: Context,
    runtime: tokio::runtime::Handle,
    code: &str,
    limits: Limits,
) -> (String, Option<ConsoleError>) {
    let output = Arc::new(Mutex::new(String::new()));
    let refused = limits.refused.clone();
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
    let result = evaluate(&engine, code, &refused);
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
    for spec in COMMANDS.iter() {
        if !spec.script {
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
        6 => {
            engine.register_fn(
                name,
                move |a: Dynamic, b: Dynamic, c: Dynamic, d: Dynamic, e: Dynamic, f: Dynamic| {
                    call(vec![s(a), s(b), s(c), s(d), s(e), s(f)])
                },
            );
        }
        7 => {
            engine.register_fn(
                name,
                move |a: Dynamic,
                      b: Dynamic,
                      c: Dynamic,
                      d: Dynamic,
                      e: Dynamic,
                      f: Dynamic,
                      g: Dynamic| {
                    call(vec![s(a), s(b), s(c), s(d), s(e), s(f), s(g)])
                },
            );
        }
        // Past the longest command (a new service with its first host).
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(code: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        eval_for(code, Duration::from_secs(10))
    }

    fn eval_for(code: &str, timeout: Duration) -> Result<Dynamic, Box<EvalAltResult>> {
        let limits = Limits {
            deadline: Instant::now() + timeout,
            timeout,
            stop: Arc::new(AtomicBool::new(false)),
            refused: Refused::default(),
        };
        let refused = limits.refused.clone();
        let engine = engine(limits, tokio_util::sync::CancellationToken::new());
        evaluate(&engine, code, &refused)
    }

    /// The bounded built-ins are the ones called (registered functions come
    /// before Rhai's packages), and they refuse before allocating.
    #[test]
    fn bounded_builtins_take_precedence() {
        let big = "let s = \"\"; s.pad(400000, \"a b \");";
        for (call, what) in [
            ("s.split()", "split would make an array of 200000 elements"),
            ("s.split(\"\")", "split would make an array of 400002"),
            ("s.to_chars()", "to_chars would make an array of 400000"),
            (
                "s.replace(\"a\", s)",
                "replace would make a string of 40000",
            ),
        ] {
            let e = eval(&format!("{big} {call}.len()")).unwrap_err();
            assert!(e.to_string().contains(what), "{call}: {e}");
        }
        let v = eval("let s = \"ab\"; s.pad(7, \"xyz\"); s.replace(\"b\", 'B'); s").unwrap();
        assert_eq!(v.to_string(), "aBxyzxy");
    }

    /// `sort` and `dedup` stop with their comparer's errors, the end of the
    /// wall time among them (Rhai's own went on comparing).
    #[test]
    fn sort_and_dedup_stop_with_their_comparer() {
        let slow = "let a = []; for i in 0..500 { a.push((i * 7919) % 500); }";
        for call in [
            "a.sort(|p, q| { let u = 0; for i in 0..1000 { u += i; } p - q })",
            "a.sort_by(|p, q| { let u = 0; for i in 0..1000 { u += i; } p - q })",
            "a.dedup(|p, q| { let u = 0; for i in 0..100000 { u += i; } false })",
        ] {
            let started = Instant::now();
            let e = eval_for(&format!("{slow} {call}; 1"), Duration::from_secs(1));
            let EvalAltResult::ErrorTerminated(why, _) = *e.unwrap_err() else {
                panic!("{call} not stopped");
            };
            assert_eq!(why.to_string(), "it ran longer than 1 s", "{call}");
            assert!(started.elapsed() < Duration::from_secs(3), "{call}");
        }
        let e = eval("let a = [2, 1]; a.sort(|p, q| throw \"no\"); 1").unwrap_err();
        assert!(e.to_string().contains("no"), "{e}");
    }

    /// Arrays and maps print as Rhai prints them, unless the text would be
    /// too long: escaped map keys are counted before it is made.
    #[test]
    fn printing_is_rhai_s_and_bounded() {
        let code = "let m = #{a: 1, b: \"x\\ty\", c: [1, 'c', \"s\", #{}, ()], d: 2.5}; \
                    `${m} ${[1, \"a\", 'c']} ${m.to_debug()} ${[m].to_string()}`";
        let ours = eval(code).unwrap().to_string();
        let rhai: Dynamic = Engine::new().eval(code).unwrap();
        assert_eq!(ours, rhai.to_string());
        let json = eval("#{a: [1, \"x\\ty\"], b: ()}.to_json()").unwrap();
        assert_eq!(json.to_string(), r#"{"a":[1,"x\ty"],"b":null}"#);
        let e = eval("let s = \"\"; s.pad(1000000, '\\x01'); let m = #{}; m[s] = 1; m.to_json()");
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("to_json would make a string of 5000"),
        );
        for call in ["m.to_string()", "`${m}`", "[m].to_debug()", "print(m)"] {
            let e = eval(&format!(
                "let s = \"\"; s.pad(1000000, '\\x01'); let m = #{{}}; m[s] = 1; {call}"
            ));
            let EvalAltResult::ErrorTerminated(why, _) = *e.unwrap_err() else {
                panic!("{call} not stopped");
            };
            assert!(
                why.to_string()
                    .starts_with("printing would make a string of 5000"),
                "{call}: {why}"
            );
        }
    }
}
