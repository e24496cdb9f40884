//! One probe of a group's active check: connect, then what the check's type
//! says (`tcp`: nothing more; `send`: write, read until the reply contains
//! `expect` or matches `expectRegex`; `http`: `GET`, read the status line,
//! over TLS with `tls`; `tls`: the handshake; the protocols of
//! [`super::protocols`]). Towards a host of a group that originates TLS,
//! every type speaks TLS, verified as the group's connections are. Whatever the host sends, at most [`READ_LIMIT`]
//! bytes are held, in a buffer of the probe's own, and nothing goes on past
//! the check's `timeout`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Waker};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
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

/// Most interim (`1xx`) answers an `http` check skips before the answer.
const MAX_INTERIM: usize = 8;

/// Longest body of an `http` check's answer read through to keep the
/// connection for the next probe (64 KiB); a longer one ends it.
const MAX_KEPT_BODY: usize = 64 << 10;

/// A byte stream a check talks over: TCP, or TLS over it.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// The connection an `http` check keeps between one host's probes
/// (`reuse`, the default): a probe then costs a request and its answer
/// instead of a connection's handshake and teardown on both ends. At most
/// one per host, dropped with the host's check task.
#[derive(Default)]
pub(crate) struct Kept(Option<(SocketAddr, Box<dyn Stream>)>);

impl Kept {
    /// The connection kept to `addr`, if it has nothing to read: a host that
    /// closed it since (its keep-alive timeout), or sent bytes no request
    /// asked for, gets a new one.
    fn take(&mut self, addr: SocketAddr) -> Option<Box<dyn Stream>> {
        let (to, mut stream) = self.0.take()?;
        (to == addr && quiet(&mut stream)).then_some(stream)
    }

    /// Keeps `stream` (if any) for the next probe of `addr`.
    fn keep(&mut self, addr: SocketAddr, stream: Option<Box<dyn Stream>>) {
        self.0 = stream.map(|s| (addr, s));
    }
}

/// Whether a read of `stream` would wait: no bytes, no end, no error. Asked
/// without waiting (and without a system call when the socket has had no
/// event since it last had nothing to read).
fn quiet(stream: &mut Box<dyn Stream>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    Pin::new(stream).poll_read(&mut cx, &mut buf).is_pending()
}

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
/// its conversation goes over it. An `http` check with `reuse` asks over the
/// connection its last probe left in `kept`, if still open, and leaves its
/// own there when the host allows. The error is the failure's reason.
pub(crate) async fn exchange(
    check: &CheckConfig,
    host_name: &str,
    addr: SocketAddr,
    origin: Option<&CheckTls>,
    deadline: Instant,
    kept: &mut Kept,
) -> Result<(), String> {
    let timeout = check.timeout;
    if matches!(check.kind, CheckKind::Udp | CheckKind::Dns) {
        return udp(check, addr, deadline).await;
    }
    if check.kind == CheckKind::Http
        && check.reuse
        && let Some(stream) = kept.take(addr)
    {
        let talk = Talk::new(stream, addr, deadline, timeout);
        match http(check, host_name, talk, true).await {
            Reply::Done(verdict, stream) => {
                kept.keep(addr, stream);
                return verdict;
            }
            // The host closed it as the request went: a new connection, as
            // if none had been kept.
            Reply::Stale => {}
        }
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
        let talk = Talk::new(stream, addr, deadline, timeout);
        return converse(check, host_name, talk, kept).await;
    }
    match check.kind {
        // The connect was the check: no conversation, no buffer.
        CheckKind::Tcp => Ok(()),
        CheckKind::Tls => tls(stream, host_name, addr, deadline, timeout)
            .await
            .map(|_| ()),
        CheckKind::Http if check.tls => {
            let stream = tls(stream, host_name, addr, deadline, timeout).await?;
            let talk = Talk::new(stream, addr, deadline, timeout);
            converse(check, host_name, talk, kept).await
        }
        _ => {
            let talk = Talk::new(stream, addr, deadline, timeout);
            converse(check, host_name, talk, kept).await
        }
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

/// What the check's type says once connected (and past TLS, if any); an
/// `http` check leaves the connection in `kept` when it may be asked again.
async fn converse<S: Stream + 'static>(
    check: &CheckConfig,
    host_name: &str,
    mut talk: Talk<S>,
    kept: &mut Kept,
) -> Result<(), String> {
    match check.kind {
        // The connect (and the handshake, if any) was the check.
        CheckKind::Tcp | CheckKind::Tls => Ok(()),
        CheckKind::Send => send_expect(check, &mut talk).await,
        CheckKind::Http => {
            let addr = talk.addr;
            match http(check, host_name, talk, false).await {
                Reply::Done(verdict, stream) => {
                    kept.keep(addr, stream.map(|s| Box::new(s) as Box<dyn Stream>));
                    verdict
                }
                Reply::Stale => Err(format!("connection to {addr} closed before the answer")),
            }
        }
        CheckKind::Redis => protocols::redis(check.role, &mut talk).await,
        CheckKind::Postgres => protocols::postgres(&check.user, &mut talk).await,
        CheckKind::Mysql => protocols::mysql(&mut talk).await,
        CheckKind::Smtp => protocols::smtp(&mut talk).await,
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

/// What an `http` probe came to.
enum Reply<S> {
    /// The check's verdict, and the connection if it may carry the next
    /// probe's request.
    Done(Result<(), String>, Option<S>),
    /// A kept connection the host had closed (or reset) before anything of
    /// an answer came: no verdict, the probe starts again on a new one.
    Stale,
}

/// `type="http"`: `GET path`, the status line's code in `status`. With
/// `reuse`, an HTTP/1.1 request without `Connection: close`; the answer is
/// read to its end (its header, and a body of `Content-Length` up to
/// [`MAX_KEPT_BODY`]) and the connection given back when the host keeps it
/// open (HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
/// `keep-alive`); otherwise the probe has its answer at the status line.
/// `reused`: the connection carried an earlier probe.
async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    check: &CheckConfig,
    host_name: &str,
    mut talk: Talk<S>,
    reused: bool,
) -> Reply<S> {
    let host = if check.host.is_empty() {
        host_name
    } else {
        &check.host
    };
    let request = match check.reuse {
        true => format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: txlb-check\r\n\r\n",
            check.path
        ),
        false => format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: txlb-check\r\nConnection: close\r\n\r\n",
            check.path
        ),
    };
    if let Err(why) = talk.send(request.as_bytes()).await {
        return match reused && !talk.late() {
            true => Reply::Stale,
            false => Reply::Done(Err(why), None),
        };
    }
    // Interim answers so far, and the code of the last.
    let (mut interim, mut after) = (0, String::new());
    let (minor, code) = loop {
        let end = match talk.read_until(line_end).await {
            Ok(end) => end,
            Err((got, _)) if reused && interim == 0 && got.is_empty() && !talk.late() => {
                return Reply::Stale;
            }
            Err((got, why)) => {
                let why = format!("{after}no HTTP status line: got {}{why}", quote(&got));
                return Reply::Done(Err(why), None);
            }
        };
        let line = talk.take(end);
        let Some((minor, code)) = status_line(line) else {
            let why = format!("not an HTTP status line: {}", quote(line));
            return Reply::Done(Err(why), None);
        };
        // An interim answer (`100 Continue`, `102 Processing`, `103 Early
        // Hints`) comes before the answer proper: its header is skipped
        // (RFC 9110, 15.2). `101` switches protocols: an answer, and a
        // failing one for a GET that asked for no upgrade.
        if code == 101 || !(100..200).contains(&code) {
            break (minor, code);
        }
        interim += 1;
        after = format!("HTTP {code}, then ");
        let skipped = match interim <= MAX_INTERIM {
            true => talk.read_until(head_end).await.map(|n| talk.take(n).len()),
            false => Err((Vec::new(), format!(" (after {MAX_INTERIM})"))),
        };
        if let Err((_, why)) = skipped {
            let why = format!("{after}no final answer{why}");
            return Reply::Done(Err(why), None);
        }
    };
    let verdict = match check.status.contains(code) {
        true => Ok(()),
        false => Err(format!("HTTP {code}")),
    };
    let keep = check.reuse && rest_of_answer(&mut talk, minor, code).await;
    Reply::Done(verdict, keep.then(|| talk.into_stream()))
}

/// Reads the rest of an answer whose status line (`HTTP/1.minor`, `code`)
/// was taken, its header and body, when the connection can carry another
/// request; whether it can (and nothing is left over).
async fn rest_of_answer<S: AsyncRead + AsyncWrite + Unpin>(
    talk: &mut Talk<S>,
    minor: u8,
    code: u16,
) -> bool {
    let Ok(end) = talk.read_until(head_end).await else {
        return false;
    };
    let Some(length) = kept_body(talk.take(end), minor, code) else {
        return false;
    };
    talk.skip(length).await && talk.drained()
}

/// The length of the body after `head` (the header lines of an answer with
/// `HTTP/1.minor` and `code`), when the connection stays open after it and
/// the body has a length of at most [`MAX_KEPT_BODY`]: `None` for
/// `Connection: close`, an HTTP/1.0 answer without `keep-alive`, a chunked
/// or unframed body, two lengths, an interim or switching answer.
fn kept_body(head: &[u8], minor: u8, code: u16) -> Option<usize> {
    let mut open = minor >= 1;
    let mut length: Option<usize> = None;
    for line in head.split(|&b| b == b'\n') {
        let line = trim_line(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value).ok()?.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    return None;
                }
                open |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let length = match code {
        100..=199 => return None,
        204 | 304 => 0,
        _ => length?,
    };
    (open && length <= MAX_KEPT_BODY).then_some(length)
}

/// The length of an answer's header lines up to and with the empty line
/// that ends them, once it is in.
fn head_end(got: &[u8]) -> Option<usize> {
    if got.starts_with(b"\r\n") {
        return Some(2);
    }
    if got.starts_with(b"\n") {
        return Some(1);
    }
    let crlf = got.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = got.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
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

    /// Takes and forgets the next `n` bytes, reading them by the deadline;
    /// whether they all came.
    async fn skip(&mut self, mut n: usize) -> bool {
        loop {
            let taken = n.min(self.len - self.start);
            self.start += taken;
            n -= taken;
            if n == 0 {
                return true;
            }
            (self.start, self.len) = (0, 0);
            match timeout_at(self.deadline, self.stream.read(&mut self.buf[..])).await {
                Ok(Ok(read)) if read > 0 => self.len = read,
                _ => return false,
            }
        }
    }

    /// Whether every byte read was taken.
    fn drained(&self) -> bool {
        self.start == self.len
    }

    /// Whether the deadline has passed.
    fn late(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The stream, once the conversation is over.
    fn into_stream(self) -> S {
        self.stream
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

/// The minor version and the code of an HTTP/1.x status line
/// (`HTTP/1.1 503 Service Unavailable`: 1, 503).
fn status_line(reply: &[u8]) -> Option<(u8, u16)> {
    let line = trim_line(reply.split(|&b| b == b'\n').next()?);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let minor = match words.next()?.strip_prefix(b"HTTP/1.")? {
        [digit] if digit.is_ascii_digit() => digit - b'0',
        _ => return None,
    };
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    Some((minor, std::str::from_utf8(code).ok()?.parse().ok()?))
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
    fn status_lines_give_their_version_and_code() {
        assert_eq!(
            status_line(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some((1, 503))
        );
        assert_eq!(status_line(b"HTTP/1.0 200\r\n"), Some((0, 200)));
        assert_eq!(status_line(b"SSH-2.0-x\r\n"), None);
        assert_eq!(status_line(b"HTTP/1.1 20x\r\n"), None);
        assert_eq!(status_line(b"HTTP/1.1 2000\r\n"), None);
        assert_eq!(status_line(b"HTTP/1.10 200\r\n"), None);
    }

    #[test]
    fn an_answer_keeps_its_connection_only_when_framed_and_not_closed() {
        let kept = |head: &str, minor, code| kept_body(head.as_bytes(), minor, code);
        assert_eq!(kept("Content-Length: 3\r\n\r\n", 1, 200), Some(3));
        assert_eq!(kept("content-length:  0 \r\nX: y\r\n\r\n", 1, 503), Some(0));
        assert_eq!(kept("\r\n", 1, 204), Some(0));
        // The host closes, or says nothing of keeping it open in HTTP/1.0.
        assert_eq!(
            kept("Content-Length: 3\r\nConnection: close\r\n\r\n", 1, 200),
            None
        );
        assert_eq!(
            kept(
                "Connection: Keep-Alive, CLOSE\r\nContent-Length: 3\r\n\r\n",
                1,
                200
            ),
            None
        );
        assert_eq!(kept("Content-Length: 3\r\n\r\n", 0, 200), None);
        assert_eq!(
            kept(
                "Connection: keep-alive\r\nContent-Length: 3\r\n\r\n",
                0,
                200
            ),
            Some(3)
        );
        // No length, chunked, two lengths, a bad one, too long, interim.
        assert_eq!(kept("\r\n", 1, 200), None);
        assert_eq!(kept("Transfer-Encoding: chunked\r\n\r\n", 1, 200), None);
        assert_eq!(
            kept("Content-Length: 3\r\nContent-Length: 4\r\n\r\n", 1, 200),
            None
        );
        assert_eq!(
            kept("Content-Length: 3\r\nContent-Length: 3\r\n\r\n", 1, 200),
            Some(3)
        );
        assert_eq!(kept("Content-Length: -1\r\n\r\n", 1, 200), None);
        assert_eq!(
            kept("Content-Length: 99999999999999999999999\r\n\r\n", 1, 200),
            None
        );
        assert_eq!(kept("Content-Length: 65537\r\n\r\n", 1, 200), None);
        assert_eq!(kept("\r\n", 1, 101), None);
        // Where the header ends.
        assert_eq!(head_end(b"\r\nrest"), Some(2));
        assert_eq!(head_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(head_end(b"A: b\n\nbody"), Some(6));
        assert_eq!(head_end(b"A: b\r\n"), None);
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

    /// What an `http` probe with the default settings makes of `reply`.
    async fn http_probe(reply: &'static [u8]) -> (Result<(), String>, bool) {
        let (mine, mut theirs) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let _ = theirs.write_all(reply).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let timeout = Duration::from_millis(300);
        let talk = Talk::new(mine, addr, Instant::now() + timeout, timeout);
        let check = CheckConfig::of(CheckKind::Http);
        match http(&check, "h", talk, false).await {
            Reply::Done(verdict, kept) => (verdict, kept.is_some()),
            Reply::Stale => panic!("a new connection is never stale"),
        }
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_for_the_answer_proper() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(http_probe(ok).await, (Ok(()), true));
        let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(http_probe(hints).await, (Ok(()), true));
        let sick = b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(http_probe(sick).await, (Err("HTTP 503".into()), true));
        // A switch of protocols is an answer, not an interim one.
        let switch = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        assert_eq!(http_probe(switch).await, (Err("HTTP 101".into()), false));
        // Interim answers alone: no verdict but a failure, at the deadline
        // or past a bound.
        let (verdict, kept) = http_probe(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        let why = verdict.unwrap_err();
        assert!(
            why.starts_with("HTTP 100, then no HTTP status line: got \"\" then timeout"),
            "{why}"
        );
        assert!(!kept);
        let endless: &'static [u8] = b"HTTP/1.1 103 X\r\n\r\n".repeat(20).leak();
        let why = http_probe(endless).await.0.unwrap_err();
        assert_eq!(why, "HTTP 103, then no final answer (after 8)");
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
