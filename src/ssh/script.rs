//! `script`: txLoadBalancer's live interpreter, reborn as an embedded Rhai engine
//! whose functions are the console's commands. `host_down("svc", "g", "a")` runs
//! `host down svc g a`; `show_hosts("svc")` returns `show hosts svc --json` as Rhai
//! maps and arrays; `run("any console line")` returns its output. The same
//! read-only rule applies, and every change still goes through `Command`.
//!
//! The engine runs on a blocking thread (Rhai is synchronous) and calls back into
//! the runtime for each command; it is bounded in operations, depth and sizes, and
//! stops when the balancer shuts down.

use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, Position};

use super::commands::{self, COMMANDS, ConsoleError, Context, Outcome};

/// Most Rhai operations one script may run.
pub const MAX_OPERATIONS: u64 = 10_000_000;
/// Longest script accepted, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;
/// Most output a script may print, in bytes; the rest is cut.
const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// Console commands that are not script functions (they talk to the terminal).
const NOT_IN_SCRIPTS: &[&str] = &["help", "exit", "watch stats", "user add", "script"];

type Call = Arc<dyn Fn(Vec<String>) -> Result<Dynamic, Box<EvalAltResult>> + Send + Sync>;

/// Runs `code`: what it printed (and its value, when not `()`), and the error
/// that stopped it, if one did.
pub(crate) async fn run(ctx: &Context, code: String) -> (String, Option<ConsoleError>) {
    if code.len() > MAX_SCRIPT_BYTES {
        let e = format!("script longer than {MAX_SCRIPT_BYTES} bytes");
        return (String::new(), Some(ConsoleError::Refused(e)));
    }
    let ctx = ctx.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || eval(ctx, runtime, &code))
        .await
        .unwrap_or_else(|_| {
            let e = ConsoleError::Refused("the script failed".into());
            (String::new(), Some(e))
        })
}

fn eval(
    ctx: Context,
    runtime: tokio::runtime::Handle,
    code: &str,
) -> (String, Option<ConsoleError>) {
    let output = Arc::new(Mutex::new(String::new()));
    let mut engine = Engine::new();
    engine
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(64)
        .set_max_expr_depths(64, 64)
        .set_max_string_size(MAX_OUTPUT_BYTES)
        .set_max_array_size(100_000)
        .set_max_map_size(100_000);
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
    let shutdown = ctx.handle.shutdown_token();
    engine.on_progress(move |_| {
        shutdown
            .is_cancelled()
            .then(|| Dynamic::from("the balancer is shutting down"))
    });
    register(&mut engine, &ctx, &runtime);
    let result = engine.eval::<Dynamic>(code);
    let mut out = output.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match result {
        Ok(value) => {
            if !value.is_unit() {
                out.push_str(&value.to_string());
                out.push('\n');
            }
            (out, None)
        }
        Err(e) => (out, Some(ConsoleError::Refused(format!("script: {e}")))),
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
