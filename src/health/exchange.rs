//! One probe of a group's active check: connect, then what the check's type
//! says (`tcp`: nothing more; `send`: write, read until the reply contains
//! `expect`; `http`: `GET`, read the status line). Whatever the host sends,
//! at most [`READ_LIMIT`] bytes are read, into a buffer on the task's stack,
//! and nothing goes on past the check's `timeout`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::config::{CheckConfig, CheckKind, Escaped};

/// Most bytes of a reply read before the probe fails (4 KiB).
pub const READ_LIMIT: usize = 4096;

/// Most bytes of a reply a failure reason quotes.
const QUOTED: usize = 64;

/// Runs one probe of `check` against `addr`, to be done by `deadline` (the
/// check's `timeout` after it started); `host_name` is the `Host` of an HTTP
/// check that names none. The error is the failure's reason.
pub(crate) async fn exchange(
    check: &CheckConfig,
    host_name: &str,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<(), String> {
    let late = || format!("timeout after {} s", check.timeout.as_secs_f64());
    let mut stream = timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr}: {}", late()))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    match check.kind {
        CheckKind::Tcp => Ok(()),
        CheckKind::Send => {
            if !check.send.is_empty() {
                timeout_at(deadline, stream.write_all(&check.send.0))
                    .await
                    .map_err(|_| format!("send to {addr}: {}", late()))?
                    .map_err(|e| format!("send to {addr}: {e}"))?;
            }
            if check.expect.is_empty() {
                return Ok(());
            }
            let expect = &check.expect.0;
            read_until(&mut stream, deadline, &late, |got| contains(got, expect))
                .await
                .map(|_| ())
                .map_err(|(got, why)| {
                    format!("expect \"{}\", got {}{why}", check.expect, quote(&got))
                })
        }
        CheckKind::Http => {
            let host = if check.host.is_empty() {
                host_name
            } else {
                &check.host
            };
            let request = format!(
                "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: txlb-check\r\nConnection: close\r\n\r\n",
                check.path
            );
            timeout_at(deadline, stream.write_all(request.as_bytes()))
                .await
                .map_err(|_| format!("send to {addr}: {}", late()))?
                .map_err(|e| format!("send to {addr}: {e}"))?;
            let line = read_until(&mut stream, deadline, &late, |got| got.contains(&b'\n'))
                .await
                .map_err(|(got, why)| format!("no HTTP status line: got {}{why}", quote(&got)))?;
            let code = status_code(&line)
                .ok_or_else(|| format!("not an HTTP status line: {}", quote(&line)))?;
            if check.status.contains(code) {
                Ok(())
            } else {
                Err(format!("HTTP {code}"))
            }
        }
    }
}

/// Whether `hay` contains `needle`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The code of an HTTP/1.x status line (`HTTP/1.1 503 Service Unavailable`).
fn status_code(reply: &[u8]) -> Option<u16> {
    let line = reply.split(|&b| b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    if !words.next()?.starts_with(b"HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// The start of a reply, as a failure reason quotes it.
fn quote(got: &[u8]) -> String {
    let trimmed = got.strip_suffix(b"\n").unwrap_or(got);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    let cut = &trimmed[..trimmed.len().min(QUOTED)];
    let more = if trimmed.len() > QUOTED { "…" } else { "" };
    format!("\"{}{more}\"", Escaped(cut.to_vec()))
}

/// Reads until `done` holds for what was read, the host closes, `deadline`
/// passes, or [`READ_LIMIT`] bytes came without it. The error carries what
/// was read and why it stopped (`" then EOF"`, `" then timeout after 1 s"`,
/// `" (4096 bytes without it)"`, a read error).
async fn read_until(
    stream: &mut TcpStream,
    deadline: Instant,
    late: &(dyn Fn() -> String + Sync),
    done: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, (Vec<u8>, String)> {
    let mut buf = [0u8; READ_LIMIT];
    let mut len = 0;
    loop {
        let n = match timeout_at(deadline, stream.read(&mut buf[len..])).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err((buf[..len].to_vec(), format!(" then {e}"))),
            Err(_) => return Err((buf[..len].to_vec(), format!(" then {}", late()))),
        };
        if n == 0 {
            return Err((buf[..len].to_vec(), " then EOF".into()));
        }
        len += n;
        if done(&buf[..len]) {
            return Ok(buf[..len].to_vec());
        }
        if len == READ_LIMIT {
            return Err((
                buf[..len].to_vec(),
                format!(" ({READ_LIMIT} bytes without it)"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_their_code() {
        assert_eq!(
            status_code(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.0 200\r\n"), Some(200));
        assert_eq!(status_code(b"SSH-2.0-x\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20x\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000\r\n"), None);
    }

    #[test]
    fn replies_are_quoted_short_and_escaped() {
        assert_eq!(quote(b"-LOADING\r\n"), "\"-LOADING\"");
        assert_eq!(quote(b"\x00\xff"), "\"\\x00\\xff\"");
        assert!(quote(&[b'a'; 100]).ends_with("…\""));
        assert!(contains(b"x+PONG\r\n", b"+PONG"));
        assert!(!contains(b"+PON", b"+PONG"));
    }
}
