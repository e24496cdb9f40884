//! One probe of a group's active check: connect, then what the check's type
//! says (`tcp`: nothing more; `send`: write, read until the reply contains
//! `expect` or matches `expectRegex`; `http`: `GET`, read the status line,
//! over TLS with `tls`; `tls`: the handshake; the protocols of
//! [`super::protocols`]). Towards a host of a group that originates TLS,
//! every type speaks TLS, verified as the group's connections are. Whatever the host sends, at most [`READ_LIMIT`]
//! bytes are held, in a buffer of the probe's own, and nothing goes on past
//! the check's `timeout`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;

use super::protocols;
use crate::config::{CheckConfig, CheckKind, Escaped};
use crate::tls::origin::AnyCertificate;

/// Most bytes of a reply held at once before the probe fails (4 KiB).
pub const READ_LIMIT: usize = 4096;

/// Most bytes of a reply a failure reason quotes.
const QUOTED: usize = 64;

/// A check's TLS towards a host its group originates TLS to: the group's
/// client settings and the host's server name. Equal when they are the same
/// settings (a reload that re-reads them restarts the check).
#[derive(Debug, Clone)]
pub(crate) struct CheckTls {
    /// The group's client settings.
    pub client: Arc<ClientConfig>,
    /// The name sent and checked.
    pub name: ServerName<'static>,
}

impl PartialEq for CheckTls {
    fn eq(&self, other: &CheckTls) -> bool {
        Arc::ptr_eq(&self.client, &other.client) && self.name == other.name
    }
}

/// Runs one probe of `check` against `addr`, to be done by `deadline` (the
/// check's `timeout` after it started); `host_name` is the `Host` of an HTTP
/// check that names none, and the TLS server name. With `origin` (the host
/// is reached with TLS), the probe completes a verified handshake first and
/// its conversation goes over it. The error is the failure's reason.
pub(crate) async fn exchange(
    check: &CheckConfig,
    host_name: &str,
    addr: SocketAddr,
    origin: Option<&CheckTls>,
    deadline: Instant,
) -> Result<(), String> {
    let timeout = check.timeout;
    if matches!(check.kind, CheckKind::Udp | CheckKind::Dns) {
        return udp(check, addr, deadline).await;
    }
    let plain = origin.is_none() && matches!(check.kind, CheckKind::Tcp | CheckKind::Http);
    let stream = timeout_at(deadline, connect(addr, speaks_first(check, origin)))
        .await
        .map_err(|_| format!("connect to {addr}: {}", late(timeout)))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    if plain {
        close_with_reset(&stream);
    }
    if plain && check.kind == CheckKind::Http && !check.tls {
        // The probe resets the connection as soon as the status line is in:
        // an ACK of the reply or of the host's FIN before that is a segment
        // (and a wake-up of the host) for nothing. (Connecting left the
        // delayed-ACK mode set by `connect`.)
        let _ = socket2::SockRef::from(&stream).set_tcp_quickack(false);
    }
    if let Some(origin) = origin {
        let connector = TlsConnector::from(origin.client.clone());
        let stream = timeout_at(deadline, connector.connect(origin.name.clone(), stream))
            .await
            .map_err(|_| format!("TLS handshake with {addr}: {}", late(timeout)))?
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        return converse(check, host_name, Talk::new(stream, addr, deadline, timeout)).await;
    }
    match check.kind {
        // The connect was the check: no conversation, no buffer.
        CheckKind::Tcp => Ok(()),
        CheckKind::Tls => tls(stream, host_name, addr, deadline, timeout)
            .await
            .map(|_| ()),
        CheckKind::Http if check.tls => {
            let stream = tls(stream, host_name, addr, deadline, timeout).await?;
            converse(check, host_name, Talk::new(stream, addr, deadline, timeout)).await
        }
        _ => converse(check, host_name, Talk::new(stream, addr, deadline, timeout)).await,
    }
}

/// Whether the probe sends before the host does: a TLS handshake's hello,
/// a request, or nothing at all before it resets (`tcp`). Hosts of `smtp`,
/// `mysql` and a `send` check with nothing to send speak first.
fn speaks_first(check: &CheckConfig, origin: Option<&CheckTls>) -> bool {
    origin.is_some()
        || check.tls
        || match check.kind {
            CheckKind::Tcp | CheckKind::Http | CheckKind::Tls => true,
            CheckKind::Redis | CheckKind::Postgres => true,
            CheckKind::Send => !check.send.is_empty(),
            CheckKind::Mysql | CheckKind::Smtp | CheckKind::Udp | CheckKind::Dns => false,
        }
}

/// Connects to `addr`. With `client_first` (the probe speaks first or not
/// at all) the socket starts in delayed-ACK mode, so the kernel does not
/// answer the host's SYN-ACK with an ACK of its own: the ACK rides on the
/// request (the host is woken once, with the request already there), or on
/// the reset of a `tcp` probe (the host's kernel answered the SYN, which is
/// what a connect proves; no connection reaches its accept queue). Never
/// for checks the host speaks first in: it could not, until the held ACK's
/// timer (up to 200 ms) sends it.
pub(crate) async fn connect(addr: SocketAddr, client_first: bool) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if client_first {
        let _ = socket2::SockRef::from(&socket).set_tcp_quickack(false);
    }
    socket.connect(addr).await
}

/// Makes closing `stream` send a reset instead of a FIN, as HAProxy's checks
/// do: the probe has its answer, and a reset spares both ends the closing
/// handshake and the host a TIME_WAIT socket per probe (60,000 of them for
/// 1,000 hosts probed every second). Only for `tcp` and `http`, whose hosts
/// do not log a reset after the reply; database servers do, so their
/// checks close gracefully.
pub(crate) fn close_with_reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// What the check's type says once connected (and past TLS, if any).
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    check: &CheckConfig,
    host_name: &str,
    mut talk: Talk<S>,
) -> Result<(), String> {
    let talk = &mut talk;
    match check.kind {
        // The connect (and the handshake, if any) was the check.
        CheckKind::Tcp | CheckKind::Tls => Ok(()),
        CheckKind::Send => send_expect(check, talk).await,
        CheckKind::Http => http(check, host_name, talk).await,
        CheckKind::Redis => protocols::redis(check.role, talk).await,
        CheckKind::Postgres => protocols::postgres(&check.user, talk).await,
        CheckKind::Mysql => protocols::mysql(talk).await,
        CheckKind::Smtp => protocols::smtp(talk).await,
        // Over UDP, never connected: see `udp`.
        CheckKind::Udp | CheckKind::Dns => Err("not a TCP check".into()),
    }
}

/// `type="udp"` and `type="dns"`: one datagram from a socket connected to
/// `addr` (`send`, or a query for `name`), then replies are read, each into
/// a buffer of [`READ_LIMIT`] bytes (longer ones are cut), until one passes
/// or `deadline`; a refusal (ICMP port unreachable) fails at once.
async fn udp(check: &CheckConfig, addr: SocketAddr, deadline: Instant) -> Result<(), String> {
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(any)
        .await
        .map_err(|e| format!("udp socket: {e}"))?;
    socket
        .connect(addr)
        .await
        .map_err(|e| format!("udp to {addr}: {e}"))?;
    let (request, id) = match check.kind {
        CheckKind::Dns => {
            let id = (crate::state::clock_nanos() & 0xffff) as u16;
            (protocols::dns_query(id, &check.name), id)
        }
        _ => (check.send.0.clone(), 0),
    };
    socket
        .send(&request)
        .await
        .map_err(|e| format!("udp to {addr}: {e}"))?;
    let mut buf = vec![0u8; READ_LIMIT];
    let mut last = Vec::new();
    loop {
        let n = match timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) if last.is_empty() => {
                return Err(format!("udp to {addr}: no reply, {}", late(check.timeout)));
            }
            Err(_) => return Err(format!("udp to {addr}: {}", String::from_utf8_lossy(&last))),
            Ok(Err(e)) => return Err(format!("udp to {addr}: {e}")),
            Ok(Ok(n)) => n,
        };
        let got = &buf[..n];
        let verdict = match check.kind {
            CheckKind::Dns => protocols::dns_answer(id, got),
            _ if !check.expect.is_empty() => match contains(got, &check.expect.0) {
                true => Ok(()),
                false => Err(format!("expect \"{}\", got {}", check.expect, quote(got))),
            },
            _ => match &check.expect_regex.0 {
                Some(regex) if !regex.is_match(got) => {
                    Err(format!("expect /{}/, got {}", regex.as_str(), quote(got)))
                }
                _ => Ok(()),
            },
        };
        match verdict {
            Ok(()) => return Ok(()),
            // Not the answer (another query's, a stray datagram): the next
            // may be, until the deadline.
            Err(why) if why.is_empty() => {}
            Err(why) => {
                last = why.into_bytes();
                if check.kind == CheckKind::Dns {
                    return Err(format!("dns: {}", String::from_utf8_lossy(&last)));
                }
            }
        }
    }
}

/// `timeout after 1 s`.
fn late(timeout: Duration) -> String {
    format!("timeout after {} s", timeout.as_secs_f64())
}

/// `type="send"`: write `send`, then read until the reply contains `expect`
/// or matches `expectRegex` (neither: the write is enough).
async fn send_expect<S: AsyncRead + AsyncWrite + Unpin>(
    check: &CheckConfig,
    talk: &mut Talk<S>,
) -> Result<(), String> {
    if !check.send.is_empty() {
        talk.send(&check.send.0).await?;
    }
    if !check.expect.is_empty() {
        let expect = &check.expect.0;
        talk.read_until(|got| contains(got, expect).then_some(got.len()))
            .await
            .map(|_| ())
            .map_err(|(got, why)| format!("expect \"{}\", got {}{why}", check.expect, quote(&got)))
    } else if let Some(regex) = &check.expect_regex.0 {
        talk.read_until(|got| regex.is_match(got).then_some(got.len()))
            .await
            .map(|_| ())
            .map_err(|(got, why)| format!("expect /{}/, got {}{why}", regex.as_str(), quote(&got)))
    } else {
        Ok(())
    }
}

/// `type="http"`: `GET path`, the status line's code in `status`.
async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    check: &CheckConfig,
    host_name: &str,
    talk: &mut Talk<S>,
) -> Result<(), String> {
    let host = if check.host.is_empty() {
        host_name
    } else {
        &check.host
    };
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: txlb-check\r\nConnection: close\r\n\r\n",
        check.path
    );
    talk.send(request.as_bytes()).await?;
    let end = talk
        .read_until(line_end)
        .await
        .map_err(|(got, why)| format!("no HTTP status line: got {}{why}", quote(&got)))?;
    let line = talk.take(end);
    let code =
        status_code(line).ok_or_else(|| format!("not an HTTP status line: {}", quote(line)))?;
    if check.status.contains(code) {
        Ok(())
    } else {
        Err(format!("HTTP {code}"))
    }
}

/// A TLS handshake over `stream`, by `deadline`, towards a host of a group
/// that does not originate TLS. The certificate is not verified: the check
/// asks whether the host answers (a group that originates verifies, see
/// [`exchange`]). The handshake's signatures are still checked.
async fn tls(
    stream: TcpStream,
    host_name: &str,
    addr: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host_name.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
    let connector = TlsConnector::from(tls_config());
    timeout_at(deadline, connector.connect(name, stream))
        .await
        .map_err(|_| format!("TLS handshake with {addr}: {}", late(timeout)))?
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))
}

/// The checks' TLS client settings, made once.
fn tls_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// One probe's conversation with a host: what it sent and not yet used, in a
/// buffer of [`READ_LIMIT`] bytes, and the probe's deadline.
pub(crate) struct Talk<S> {
    stream: S,
    addr: SocketAddr,
    deadline: Instant,
    timeout: Duration,
    buf: Box<[u8; READ_LIMIT]>,
    /// Bytes of `buf` read and not yet taken.
    len: usize,
    /// Where the bytes not yet taken start.
    start: usize,
}

/// What a read got before it stopped, and why it stopped (`" then EOF"`,
/// `" then timeout after 1 s"`, `" (4096 bytes without it)"`, a read error).
pub(crate) type Unfinished = (Vec<u8>, String);

impl<S: AsyncRead + AsyncWrite + Unpin> Talk<S> {
    /// A conversation over `stream` (connected to `addr`) ending by `deadline`.
    pub(crate) fn new(stream: S, addr: SocketAddr, deadline: Instant, timeout: Duration) -> Self {
        Talk {
            stream,
            addr,
            deadline,
            timeout,
            buf: Box::new([0; READ_LIMIT]),
            len: 0,
            start: 0,
        }
    }

    /// Writes all of `bytes` by the deadline.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let addr = self.addr;
        timeout_at(self.deadline, self.stream.write_all(bytes))
            .await
            .map_err(|_| format!("send to {addr}: {}", late(self.timeout)))?
            .map_err(|e| format!("send to {addr}: {e}"))
    }

    /// Reads until `done` finds a whole message at the start of what is not
    /// yet taken (it answers the message's length), the host closes, the
    /// deadline passes, or the buffer is full without one. The length is the
    /// message's, for [`Talk::take`].
    pub(crate) async fn read_until(
        &mut self,
        done: impl Fn(&[u8]) -> Option<usize>,
    ) -> Result<usize, Unfinished> {
        loop {
            let pending = &self.buf[self.start..self.len];
            if let Some(n) = done(pending).filter(|&n| n <= pending.len()) {
                return Ok(n);
            }
            if self.len == READ_LIMIT {
                if self.start == 0 {
                    return Err((
                        pending.to_vec(),
                        format!(" ({READ_LIMIT} bytes without it)"),
                    ));
                }
                // Make room: what was taken goes.
                self.buf.copy_within(self.start..self.len, 0);
                self.len -= self.start;
                self.start = 0;
            }
            let read = timeout_at(self.deadline, self.stream.read(&mut self.buf[self.len..])).await;
            let pending = || self.buf[self.start..self.len].to_vec();
            let n = match read {
                Ok(Ok(0)) => return Err((pending(), " then EOF".into())),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err((pending(), format!(" then {e}"))),
                Err(_) => return Err((pending(), format!(" then {}", late(self.timeout)))),
            };
            self.len += n;
        }
    }

    /// The next `n` bytes not yet taken (a message [`Talk::read_until`]
    /// found), now taken.
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        let at = self.start;
        self.start += n.min(self.len - at);
        &self.buf[at..self.start]
    }
}

/// The length of the first line (its `\n` included), once there is one.
pub(crate) fn line_end(got: &[u8]) -> Option<usize> {
    got.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

/// A line without its `\r\n` or `\n`.
pub(crate) fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `hay` contains `needle`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The code of an HTTP/1.x status line (`HTTP/1.1 503 Service Unavailable`).
fn status_code(reply: &[u8]) -> Option<u16> {
    let line = trim_line(reply.split(|&b| b == b'\n').next()?);
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
pub(crate) fn quote(got: &[u8]) -> String {
    let trimmed = trim_line(got);
    let cut = &trimmed[..trimmed.len().min(QUOTED)];
    let more = if trimmed.len() > QUOTED { "…" } else { "" };
    format!("\"{}{more}\"", Escaped(cut.to_vec()))
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

    /// A conversation with `reply` arriving in pieces of `chunk` bytes.
    async fn talk_to(reply: Vec<u8>, chunk: usize) -> Talk<tokio::io::DuplexStream> {
        let (mine, mut theirs) = tokio::io::duplex(64);
        tokio::spawn(async move {
            for piece in reply.chunks(chunk) {
                if theirs.write_all(piece).await.is_err() {
                    return;
                }
            }
            // Keep the stream open a while: the reads end by the deadline.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let deadline = Instant::now() + Duration::from_millis(300);
        Talk::new(mine, addr, deadline, Duration::from_millis(300))
    }

    #[tokio::test]
    async fn a_talk_reads_messages_in_turn_and_stops_at_the_limit_or_deadline() {
        let mut talk = talk_to(b"one\r\ntwo\r\nthr".to_vec(), 1).await;
        let n = talk.read_until(line_end).await.unwrap();
        assert_eq!(talk.take(n), b"one\r\n");
        let n = talk.read_until(line_end).await.unwrap();
        assert_eq!(trim_line(talk.take(n)), b"two");
        let (got, why) = talk.read_until(line_end).await.unwrap_err();
        assert_eq!(
            (got.as_slice(), why.as_str()),
            (&b"thr"[..], " then timeout after 0.3 s")
        );
        // An endless line: the buffer's worth, then the failure.
        let mut talk = talk_to(vec![b'a'; 3 * READ_LIMIT], 1000).await;
        let (got, why) = talk.read_until(line_end).await.unwrap_err();
        assert_eq!(got.len(), READ_LIMIT);
        assert!(why.contains("4096 bytes without it"), "{why}");
        // Taken messages make room for more: many short lines in turn.
        let lines: Vec<u8> = b"ok\n".repeat(3 * READ_LIMIT / 3);
        let mut talk = talk_to(lines, 777).await;
        for _ in 0..READ_LIMIT {
            let n = talk.read_until(line_end).await.unwrap();
            assert_eq!(talk.take(n), b"ok\n");
        }
    }
}
