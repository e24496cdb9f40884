//! `cargo xtask`: the build-time artefacts of `txlb`, rendered from its command
//! line (`src/bin/txlb/cli.rs`): the man page txlb(1) and the shell completions.
//! `scripts/package.sh` puts them in the Debian package.
//!
//! ```text
//! cargo xtask man                 # txlb(1), in roff, on stdout
//! cargo xtask completions SHELL   # bash, zsh, fish, elvish, powershell
//! cargo xtask assets DIR          # txlb.1, txlb.bash, _txlb, txlb.fish into DIR
//! ```

#[path = "../../src/bin/txlb/cli.rs"]
#[allow(dead_code)]
mod cli;

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap_complete::Shell;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["man"] => man_page(&mut io::stdout().lock()),
        ["completions", shell] => match shell.parse::<Shell>() {
            Ok(shell) => {
                completions(shell, &mut io::stdout().lock());
                Ok(())
            }
            Err(error) => Err(io::Error::other(error)),
        },
        ["assets", dir] => assets(Path::new(dir)),
        _ => {
            eprintln!("usage: cargo xtask man | completions SHELL | assets DIR");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the man page and the completions of bash, zsh and fish into `dir`
/// under the names their packages install.
fn assets(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    man_page(&mut std::fs::File::create(dir.join("txlb.1"))?)?;
    for (shell, name) in [
        (Shell::Bash, "txlb.bash"),
        (Shell::Zsh, "_txlb"),
        (Shell::Fish, "txlb.fish"),
    ] {
        completions(shell, &mut std::fs::File::create(dir.join(name))?);
    }
    Ok(())
}

/// txlb's command line, with txlb's version (clap would take this crate's).
fn txlb_command() -> clap::Command {
    let manifest = include_str!("../../Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or("unknown");
    <cli::Cli as clap::CommandFactory>::command().version(version)
}

/// The completion script of `shell`.
fn completions(shell: Shell, out: &mut dyn Write) {
    let mut command = txlb_command();
    clap_complete::generate(shell, &mut command, "txlb", out);
}

/// Writes txlb(1): clap's sections, every command with its options, then what an
/// operator looks for in a man page (signals, files, environment).
fn man_page(out: &mut dyn Write) -> io::Result<()> {
    let command = txlb_command();
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
