//! One SSH session channel: an interactive console (`shell`, with the line editor
//! and a prompt) or one command line (`exec`, with an exit status and errors on
//! stderr).

use std::time::Duration;

use russh::ChannelMsg;
use russh::server::Msg;

use super::commands::{self, ConsoleError, Context, Outcome};
use super::editor::{EditorEvent, LineEditor};

type Channel = russh::Channel<Msg>;

/// SSH extended data type of stderr.
const STDERR: u32 = 1;
/// How long an exec command waits for a password on stdin (`user add`).
const STDIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one session channel until it closes or the balancer shuts down.
pub(crate) async fn serve(mut channel: Channel, ctx: Context) {
    let shutdown = ctx.handle.shutdown_token();
    let mut pty = false;
    loop {
        let msg = tokio::select! {
            msg = channel.wait() => msg,
            _ = shutdown.cancelled() => return,
        };
        match msg {
            Some(ChannelMsg::RequestPty { .. }) => pty = true,
            Some(ChannelMsg::RequestShell { .. }) => {
                Interactive::new(channel, ctx).run().await;
                return;
            }
            Some(ChannelMsg::Exec { command, .. }) => {
                exec(channel, ctx, command, pty).await;
                return;
            }
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    }
}

/// Output for a terminal: bare LF becomes CR LF (we are the terminal driver).
fn crlf(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32);
    let mut prev = 0u8;
    for &b in text.as_bytes() {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Runs every command of `line` in order, stopping at the first error.
async fn run_line(ctx: &Context, line: &str) -> Vec<Result<Outcome, ConsoleError>> {
    let commands = match commands::split_line(line) {
        Ok(c) => c,
        Err(e) => return vec![Err(e)],
    };
    let mut results = Vec::new();
    for words in commands {
        let result = match commands::parse(&words) {
            Ok(parsed) => commands::run(ctx, &parsed).await,
            Err(e) => Err(e),
        };
        let stop = !matches!(result, Ok(Outcome::Text(_)));
        results.push(result);
        if stop {
            break;
        }
    }
    results
}

/// `ssh host 'COMMAND'`: output on stdout, errors on stderr, exit status.
async fn exec(mut channel: Channel, ctx: Context, command: Vec<u8>, pty: bool) {
    let out = |text: &str| {
        if pty {
            crlf(text)
        } else {
            text.as_bytes().to_vec()
        }
    };
    let mut status = 0;
    match String::from_utf8(command) {
        Err(_) => {
            let _ = channel
                .extended_data_bytes(STDERR, out("error: the command is not UTF-8\n"))
                .await;
            status = 2;
        }
        Ok(line) => {
            for result in run_line(&ctx, &line).await {
                let result = match result {
                    Ok(Outcome::AddUser { name, access }) => match read_stdin_line(&mut channel)
                        .await
                    {
                        Some(password) => commands::add_user(&ctx, &name, access, password).await,
                        None => Err(ConsoleError::Refused(
                            "user add: no password on standard input".into(),
                        )),
                    }
                    .map(Outcome::Text),
                    other => other,
                };
                match result {
                    Ok(Outcome::Text(text)) => {
                        let _ = channel.data_bytes(out(&text)).await;
                    }
                    Ok(Outcome::Watch(period)) => watch_exec(&mut channel, &ctx, period, pty).await,
                    Ok(Outcome::Script(code)) => {
                        let code = match code {
                            Some(code) => Some(code),
                            None => read_stdin_all(&mut channel).await,
                        };
                        let (text, error) = match code {
                            Some(code) => {
                                // A closed channel drops the script's future: it stops.
                                tokio::select! {
                                    r = super::script::run(&ctx, code) => r,
                                    () = closed(&mut channel) => return,
                                }
                            }
                            None => {
                                let e = "script: no script on standard input";
                                (String::new(), Some(ConsoleError::Refused(e.into())))
                            }
                        };
                        if !text.is_empty() {
                            let _ = channel.data_bytes(out(&text)).await;
                        }
                        if let Some(e) = error {
                            let _ = channel
                                .extended_data_bytes(STDERR, out(&format!("error: {e}\n")))
                                .await;
                            status = e.exit_status();
                        }
                    }
                    Ok(Outcome::Exit | Outcome::AddUser { .. }) => {}
                    Err(e) => {
                        let _ = channel
                            .extended_data_bytes(STDERR, out(&format!("error: {e}\n")))
                            .await;
                        status = e.exit_status();
                    }
                }
            }
        }
    }
    let _ = channel.exit_status(status).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

/// Resolves when the channel has closed (its session ended); the client's end
/// of input is not a close, nor is anything it sends.
async fn closed(channel: &mut Channel) {
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    }
}

/// The first line of the client's stdin (a password for `user add`).
async fn read_stdin_line(channel: &mut Channel) -> Option<String> {
    let buf = read_stdin_until(channel, |buf| buf.contains(&b'\n') || buf.len() > 4096).await?;
    let text = String::from_utf8(buf).ok()?;
    let line = text.lines().next().unwrap_or_default();
    Some(line.trim_end_matches('\r').to_string()).filter(|l| !l.is_empty())
}

/// All of the client's stdin (a script), up to its end or the size limit.
async fn read_stdin_all(channel: &mut Channel) -> Option<String> {
    let buf = read_stdin_until(channel, |buf| buf.len() > super::script::MAX_SCRIPT_BYTES).await?;
    String::from_utf8(buf).ok().filter(|s| !s.trim().is_empty())
}

/// The client's stdin up to its end or until `enough` holds for what has come so
/// far; `None` when it takes longer than [`STDIN_TIMEOUT`]. One loop for both
/// readers, so they stop on the same channel messages.
async fn read_stdin_until(
    channel: &mut Channel,
    enough: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let read = async {
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    buf.extend_from_slice(&data);
                    if enough(&buf) {
                        break;
                    }
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
    };
    tokio::time::timeout(STDIN_TIMEOUT, read).await.ok()?;
    Some(buf)
}

/// `watch stats` in exec mode: a frame per period until stdin sends something
/// or closes.
async fn watch_exec(channel: &mut Channel, ctx: &Context, period: Duration, pty: bool) {
    let mut tick = tokio::time::interval(period);
    let shutdown = ctx.handle.shutdown_token();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let mut frame = super::views::watch_frame(&ctx.handle, period);
                frame.push('\n');
                let bytes = if pty { crlf(&frame) } else { frame.into_bytes() };
                if channel.data_bytes(bytes).await.is_err() {
                    return;
                }
            }
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { .. } | ChannelMsg::Eof | ChannelMsg::Close) | None => return,
                Some(_) => {}
            },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The interactive console of one channel.
struct Interactive {
    channel: Channel,
    ctx: Context,
    editor: LineEditor,
    prompt: String,
    /// The client sent the end of its input while a script ran: leave once the
    /// keys already typed are handled.
    input_ended: bool,
}

/// What the session does after a command.
enum Next {
    Continue,
    Leave,
}

impl Interactive {
    fn new(channel: Channel, ctx: Context) -> Self {
        let prompt = format!("{}@{}> ", ctx.principal.name, ctx.settings.name);
        Interactive {
            channel,
            editor: LineEditor::new(prompt.clone()),
            prompt,
            ctx,
            input_ended: false,
        }
    }

    async fn write(&self, text: &str) -> bool {
        self.channel.data_bytes(crlf(text)).await.is_ok()
    }

    async fn write_raw(&self, bytes: Vec<u8>) -> bool {
        bytes.is_empty() || self.channel.data_bytes(bytes).await.is_ok()
    }

    async fn start_line(&mut self, prompt: &str, echo: bool) -> bool {
        let mut out = Vec::new();
        self.editor.start(prompt, echo, &mut out);
        self.write_raw(out).await
    }

    async fn run(mut self) {
        let access = match self.ctx.principal.access {
            crate::config::Access::Full => "full",
            crate::config::Access::ReadOnly => "read-only",
        };
        let banner = format!(
            "txlb console on {} - {} with {access} access. Type help, Tab completes, exit leaves.\n",
            self.ctx.settings.name, self.ctx.principal.name
        );
        let prompt = self.prompt.clone();
        if !self.write(&banner).await || !self.start_line(&prompt, true).await {
            return;
        }
        let shutdown = self.ctx.handle.shutdown_token();
        loop {
            // Keys already queued (pasted or piped lines) are handled first.
            match self.next_line(&prompt).await {
                Some(Ok(line)) => {
                    if let Next::Leave = self.execute(&line).await {
                        break;
                    }
                    if !self.start_line(&prompt, true).await {
                        return;
                    }
                    continue;
                }
                Some(Err(Next::Leave)) => break,
                Some(Err(Next::Continue)) => continue,
                None => {}
            }
            if self.input_ended {
                break;
            }
            let msg = tokio::select! {
                msg = self.channel.wait() => msg,
                _ = shutdown.cancelled() => {
                    let _ = self.write("\nthe balancer is shutting down\n").await;
                    break;
                }
            };
            match msg {
                Some(ChannelMsg::Data { data }) => self.editor.push(&data),
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        let _ = self.channel.exit_status(0).await;
        let _ = self.channel.eof().await;
        let _ = self.channel.close().await;
    }

    /// The next event from queued keys: a line, or Leave/Continue for Ctrl-D and
    /// Ctrl-C; `None` when more keys are needed.
    async fn next_line(&mut self, prompt: &str) -> Option<Result<String, Next>> {
        let config = self.ctx.handle.config();
        let mut out = Vec::new();
        let event = self
            .editor
            .next_event(&mut out, &mut |before| commands::complete(&config, before));
        if !self.write_raw(out).await {
            return Some(Err(Next::Leave));
        }
        match event? {
            EditorEvent::Line(line) => Some(Ok(line)),
            EditorEvent::Eof => Some(Err(Next::Leave)),
            EditorEvent::Interrupt => {
                if !self.start_line(prompt, true).await {
                    return Some(Err(Next::Leave));
                }
                Some(Err(Next::Continue))
            }
        }
    }

    async fn execute(&mut self, line: &str) -> Next {
        for result in run_line(&self.ctx, line).await {
            let ok = match result {
                Ok(Outcome::Text(text)) => self.write(&text).await,
                Ok(Outcome::Exit) => return Next::Leave,
                Ok(Outcome::Watch(period)) => self.watch(period).await,
                Ok(Outcome::AddUser { name, access }) => self.add_user(&name, access).await,
                Ok(Outcome::Script(code)) => self.script(code).await,
                Err(e) => self.write(&format!("error: {e}\n")).await,
            };
            if !ok {
                return Next::Leave;
            }
        }
        Next::Continue
    }

    /// Reads a line without echo; `None` if abandoned (Ctrl-C, Ctrl-D, closed).
    async fn secret(&mut self, prompt: &str) -> Option<String> {
        if !self.start_line(prompt, false).await {
            return None;
        }
        self.read_line(prompt).await
    }

    /// Reads one line after `start_line`; `None` if abandoned.
    async fn read_line(&mut self, prompt: &str) -> Option<String> {
        loop {
            match self.next_line(prompt).await {
                Some(Ok(line)) => return Some(line),
                Some(Err(_)) => return None,
                None => {}
            }
            match self.channel.wait().await {
                Some(ChannelMsg::Data { data }) => self.editor.push(&data),
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return None,
                Some(_) => {}
            }
        }
    }

    async fn add_user(&mut self, name: &str, access: crate::config::Access) -> bool {
        let Some(first) = self.secret("Password: ").await else {
            return self.write("user not added\n").await;
        };
        let Some(again) = self.secret("Again: ").await else {
            return self.write("user not added\n").await;
        };
        if first != again {
            return self
                .write("error: the passwords differ; user not added\n")
                .await;
        }
        match commands::add_user(&self.ctx, name, access, first).await {
            Ok(text) => self.write(&text).await,
            Err(e) => self.write(&format!("error: {e}\n")).await,
        }
    }

    /// `script`: the given code, or lines typed until one with a single `.`.
    async fn script(&mut self, code: Option<String>) -> bool {
        let code = match code {
            Some(code) => code,
            None => {
                if !self
                    .write(
                        "Type the script; end it with a line holding a single . (Ctrl-C cancels)\n",
                    )
                    .await
                {
                    return false;
                }
                let mut code = String::new();
                loop {
                    if !self.start_line("... ", true).await {
                        return false;
                    }
                    match self.read_line("... ").await {
                        Some(line) if line.trim() == "." => break,
                        Some(line) => {
                            code.push_str(&line);
                            code.push('\n');
                        }
                        None => return self.write("script cancelled\n").await,
                    }
                }
                code
            }
        };
        // Ctrl-C or a closed channel drops the script's future: it stops. Keys
        // typed meanwhile are kept; the end of input ends the session after it.
        let mut eof = false;
        let run = super::script::run(&self.ctx, code);
        tokio::pin!(run);
        let (text, error) = loop {
            tokio::select! {
                r = &mut run => break r,
                msg = self.channel.wait() => match msg {
                    Some(ChannelMsg::Data { data }) if data.contains(&3) => {
                        return self.write("script interrupted\n").await;
                    }
                    Some(ChannelMsg::Data { data }) => self.editor.push(&data),
                    Some(ChannelMsg::Eof) => eof = true,
                    Some(ChannelMsg::Close) | None => return false,
                    Some(_) => {}
                },
            }
        };
        let written = match error {
            None => self.write(&text).await,
            Some(e) => self.write(&format!("{text}error: {e}\n")).await,
        };
        self.input_ended |= eof;
        written
    }

    /// `watch stats`: redraws the stats every period until a key is pressed.
    async fn watch(&mut self, period: Duration) -> bool {
        let mut tick = tokio::time::interval(period);
        let shutdown = self.ctx.handle.shutdown_token();
        // A key typed ahead of the command would stop it at once: drop it.
        self.editor.clear_pending();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let frame = super::views::watch_frame(&self.ctx.handle, period);
                    let mut bytes = b"\x1b[H\x1b[2J".to_vec();
                    bytes.extend(crlf(&frame));
                    if !self.write_raw(bytes).await {
                        return false;
                    }
                }
                msg = self.channel.wait() => match msg {
                    Some(ChannelMsg::Data { .. }) => return true,
                    Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return false,
                    Some(_) => {}
                },
                _ = shutdown.cancelled() => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::crlf;

    #[test]
    fn line_feeds_become_crlf_once() {
        assert_eq!(crlf("a\nb\r\nc"), b"a\r\nb\r\nc");
    }
}
