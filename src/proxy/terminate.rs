//! Listeners that terminate TLS: the handshake (bounded by the listener's
//! `handshakeTimeout`), what it tells for routing and the logs, and the copy
//! loop of a connection with TLS on either side (a terminated client, a host
//! TLS is originated towards, or both).
//!
//! Plain-TCP connections never come here: their copy loop (`copy.rs`) works
//! on the sockets' readiness and parks idle connections; one with TLS is
//! copied through `AsyncRead`/`AsyncWrite` (`copy` below, holding no buffer
//! of its own while idle) and never parked. A TLS 1.3 client leaves rustls
//! once its handshake is done (`TlsClient::of`): rustls' stream keeps a
//! record buffer and its state for the connection's life, `tls13.rs` only
//! the keys. TLS 1.2 clients, and the rare handshake that ends with part of
//! a record read, stay with rustls.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::copy::Side;
use super::listener::Terminating;
use super::tls13::Tls13Stream;
use crate::config::ClientProtocol;
use crate::routing::Seen;
use crate::state::clock_ms;
use crate::tls::acme::ACME_TLS_ALPN;
use crate::tls::record::{Records, TrafficSecrets, capture};
use crate::tls::{HandshakeFailure, Session};

/// A client's socket, with the bytes already read from it (behind a PROXY
/// header) given back first: what rustls reads the handshake from.
#[derive(Debug)]
pub(crate) struct Prefixed {
    early: Vec<u8>,
    at: usize,
    io: TcpStream,
    /// Where the records rustls read end, while it handshakes.
    records: Option<Boundary>,
}

impl Prefixed {
    /// `io`, whose first bytes are `early`.
    pub(crate) fn new(early: Vec<u8>, io: TcpStream) -> Prefixed {
        Prefixed {
            early,
            at: 0,
            io,
            records: Some(Boundary::default()),
        }
    }

    /// The socket.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.io
    }

    /// rustls read whole records only (none of its buffer is left to read)
    /// and nothing given back is left: the stream may leave rustls.
    fn between_records(&self) -> bool {
        self.at == self.early.len() && self.records.as_ref().is_some_and(Boundary::between)
    }
}

/// Follows the records in a byte stream (header, then its length of body)
/// to tell when the bytes read so far end with a whole record.
#[derive(Debug, Default)]
struct Boundary {
    header: [u8; 5],
    /// Header bytes seen of the record starting.
    have: usize,
    /// Body bytes still to come of the current record.
    left: usize,
}

impl Boundary {
    fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = self.left.min(bytes.len());
                self.left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (self.header.len() - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == self.header.len() {
                self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.have = 0;
            }
        }
    }
    fn between(&self) -> bool {
        self.have == 0 && self.left == 0
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if this.at < this.early.len() {
            let n = (this.early.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.early[this.at..this.at + n]);
            this.at += n;
            if this.at == this.early.len() {
                this.early = Vec::new();
                this.at = 0;
            }
        } else {
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        }
        if let Some(records) = &mut this.records {
            records.saw(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    /// rustls writes the records it has queued (a handshake's flight, a
    /// copy's records) with one `writev`: without it, each is a system call
    /// and a segment of its own (three for a full handshake's flight).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A terminated client's stream: TLS over its socket, through rustls or,
/// once a TLS 1.3 handshake is done, our own record layer (`tls13.rs`:
/// rustls keeps buffers and state for the connection's life).
pub(crate) enum TlsClient {
    /// rustls' stream (TLS 1.2; the handshake left bytes in rustls).
    Rustls(Box<TlsStream<Prefixed>>),
    /// TLS 1.3 without rustls.
    Tls13(Box<Tls13Stream>),
}

impl TlsClient {
    /// The client's socket.
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            TlsClient::Rustls(stream) => stream.get_ref().0.socket(),
            TlsClient::Tls13(stream) => stream.socket(),
        }
    }

    /// The stream to copy through.
    pub(crate) fn stream(&mut self) -> &mut dyn Stream {
        match self {
            TlsClient::Rustls(stream) => &mut **stream,
            TlsClient::Tls13(stream) => &mut **stream,
        }
    }

    /// A finished handshake's stream: out of rustls when it can be
    /// (`traffic`, its secrets, captured), else rustls' own.
    fn of(mut stream: TlsStream<Prefixed>, traffic: TrafficSecrets) -> io::Result<TlsClient> {
        let (io, conn) = stream.get_ref();
        let suite = match conn.negotiated_cipher_suite() {
            Some(rustls::SupportedCipherSuite::Tls13(suite)) => suite.common.suite,
            _ => return Ok(TlsClient::rustls(stream)),
        };
        // The conditions of `dangerous_extract_secrets` (handshake done,
        // nothing to send), and nothing read but not processed.
        if !io.between_records() || conn.wants_write() || conn.is_handshaking() {
            return Ok(TlsClient::rustls(stream));
        }
        let (io, conn) = stream.get_mut();
        let closed = match conn.process_new_packets() {
            Ok(state) => state.peer_has_closed(),
            Err(e) => {
                // rustls queued the alert that answers it: one try to send
                // it (tokio-rustls' own "last gasp"), never a wait.
                let _ = conn.write_tls(&mut NonBlocking(io.socket()));
                return Err(io::Error::other(e));
            }
        };
        // A key update read with the client's Finished (or just now) asked
        // for ours: rustls keeps its answer apart until it next writes (and
        // has moved its key on), and extraction would drop it. An empty
        // write queues it; rustls then sends it and serves the connection.
        let _ = io::Write::write(&mut conn.writer(), &[]);
        if conn.wants_write() {
            return Ok(TlsClient::rustls(stream));
        }
        let mut plain = Vec::new();
        // Ends at what is buffered: WouldBlock, or the client's end (read
        // again from the socket, which tells it once more).
        match io::Read::read_to_end(&mut conn.reader(), &mut plain) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::UnexpectedEof
                ) => {}
            Err(e) => return Err(e),
        }
        let (io, conn) = stream.into_inner();
        let secrets = conn.dangerous_extract_secrets().map_err(io::Error::other)?;
        let records = Records::new(suite, secrets, traffic).ok_or_else(|| {
            io::Error::other(
                "TLS 1.3 keys not usable (none of the key log's generations made them)",
            )
        })?;
        Ok(TlsClient::Tls13(Box::new(Tls13Stream::new(
            io.io, records, plain, closed,
        ))))
    }

    fn rustls(mut stream: TlsStream<Prefixed>) -> TlsClient {
        stream.get_mut().0.records = None;
        TlsClient::Rustls(Box::new(stream))
    }
}

/// Writes to a socket what it takes now, never waiting: for an alert sent
/// on the way out.
struct NonBlocking<'a>(&'a TcpStream);

impl io::Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(self.0).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A finished handshake.
pub(crate) struct Handshaken {
    /// The client, speaking TLS.
    pub stream: TlsClient,
    /// What its ClientHello asked for (SNI, ALPN offered), for the routes.
    pub seen: Seen,
    /// What was agreed, for the logs.
    pub session: Session,
}

/// Runs the server side of a TLS handshake on `client` (after `early`, bytes
/// already read), within the listener's `handshakeTimeout`: the certificate
/// is chosen by the ClientHello's SNI (`tls::ByName`). Counts the outcome on
/// the listener; a failure closes the client (dropping it).
pub(crate) async fn handshake(
    client: TcpStream,
    early: Vec<u8>,
    tls: &Terminating,
) -> Result<Handshaken, HandshakeFailure> {
    let deadline = tokio::time::Instant::now() + tls.terminator.config.options.handshake_timeout;
    let result = async {
        let acceptor = LazyConfigAcceptor::new(
            rustls::server::Acceptor::default(),
            Prefixed::new(early, client),
        );
        let start = tokio::time::timeout_at(deadline, acceptor)
            .await
            .map_err(|_| HandshakeFailure::Timeout)?
            .map_err(|e| HandshakeFailure::of(&e))?;
        let hello = start.client_hello();
        let mut seen = Seen::new(ClientProtocol::Tls);
        seen.sni = hello
            .server_name()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase().into());
        if let Some(offered) = hello.alpn() {
            seen.alpn = offered
                .take(Seen::MAX_ALPN)
                .map(|p| String::from_utf8_lossy(p).into())
                .collect();
        }
        if let Some(acme) = &tls.terminator.acme {
            let validating = hello
                .alpn()
                .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
            if validating {
                // RFC 8737: the validation certificate, then nothing more.
                let mut stream =
                    tokio::time::timeout_at(deadline, start.into_stream(acme.validation.clone()))
                        .await
                        .map_err(|_| HandshakeFailure::Timeout)?
                        .map_err(|e| HandshakeFailure::of(&e))?;
                let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
                return Err(HandshakeFailure::AcmeValidation);
            }
            if acme.pick(seen.sni.as_deref()).current().is_none() {
                return Err(HandshakeFailure::NoCertificate);
            }
        }
        // The traffic secrets are derived (and captured) as the server's
        // flight is made: in `into_stream`, or in a poll after a retry.
        let mut traffic = TrafficSecrets::default();
        let mut accept = capture(&mut traffic, || {
            start.into_stream(tls.terminator.server.clone())
        });
        let accepting =
            std::future::poll_fn(|cx| capture(&mut traffic, || Pin::new(&mut accept).poll(cx)));
        let stream = tokio::time::timeout_at(deadline, accepting)
            .await
            .map_err(|_| HandshakeFailure::Timeout)?
            .map_err(|e| HandshakeFailure::of(&e))?;
        let session = Session::of(stream.get_ref().1);
        let stream = TlsClient::of(stream, traffic).map_err(|e| HandshakeFailure::of(&e))?;
        Ok(Handshaken {
            stream,
            seen,
            session,
        })
    }
    .await;
    match &result {
        Ok(done) => tls.counters.completed(done.session.version),
        Err(why) => tls.counters.failed(*why),
    }
    result
}

/// Either side of a connection copied through rustls: a plain socket, a
/// terminated client or a host TLS is originated towards.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// One direction of a copy through TLS. Bytes read are written on at once
/// from a scratch buffer on the stack; only what the other side does not
/// take at once is kept, on the heap, until it does: an idle connection holds
/// no copy buffer (rustls' stream keeps its own, 4 KiB, for reading records;
/// `Tls13Stream` reads records into this one).
#[derive(Default)]
struct Direction {
    /// Read, not yet written; empty (no allocation) most of the time.
    pending: Vec<u8>,
    /// How much of `pending` is written.
    at: usize,
    /// Written since the last flush (rustls may hold records to send).
    unflushed: bool,
    /// The reading side reached its end: shutting the writing side down.
    ended: bool,
    /// Shut down too: this direction is done.
    done: bool,
}

/// The scratch buffer of one read (on the worker's stack, never held while
/// idle): four TLS records' largest payload, so a busy stream is read and
/// written (rustls' records in one `writev`) in a quarter of the system calls
/// and wake-ups one record at a time takes.
const SCRATCH: usize = 64 * 1024;

impl Direction {
    /// Copies from `from` to `to` as far as both allow; `Ready` once `from`
    /// has ended and `to` is shut down.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut dyn Stream,
        to: &mut dyn Stream,
        on_read: &mut dyn FnMut(usize),
    ) -> Poll<io::Result<()>> {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            // What the other side did not take yet goes first.
            while self.at < self.pending.len() {
                match Pin::new(&mut *to).poll_write(cx, &self.pending[self.at..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => self.at += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                self.unflushed = true;
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new(); // give the heap back
                self.at = 0;
            }
            if self.ended {
                return match Pin::new(&mut *to).poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                    other => other,
                };
            }
            let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); SCRATCH];
            let mut buf = ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    // What reading made the source's TLS queue for its peer
                    // (an alert refusing a renegotiation, say) leaves now,
                    // not with the other direction's next bytes. Its errors
                    // are the other direction's to meet.
                    let _ = Pin::new(&mut *from).poll_flush(cx);
                    if self.unflushed {
                        match Pin::new(&mut *to).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.unflushed = false,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
                // A TLS peer that closes without `close_notify` (most do) has
                // reached its end, as a TCP peer sending FIN.
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.ended = true
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => self.ended = true,
                Poll::Ready(Ok(())) => {
                    let read = buf.filled();
                    on_read(read.len());
                    let mut at = 0;
                    while at < read.len() {
                        match Pin::new(&mut *to).poll_write(cx, &read[at..]) {
                            Poll::Ready(Ok(0)) => {
                                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                            }
                            Poll::Ready(Ok(n)) => at += n,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending => break,
                        }
                    }
                    self.unflushed = true;
                    if at < read.len() {
                        self.pending = read[at..].to_vec();
                        self.at = 0;
                    }
                }
            }
        }
    }
}

/// Copies between a client and its host one of which speaks TLS, both ways,
/// half-close passed on, until both are done (or an error); `on_read` hears
/// of every chunk read from either side. Returns the side that closed first.
pub(crate) async fn copy(
    client: &mut dyn Stream,
    host: &mut dyn Stream,
    on_read: impl Fn(Side, usize),
) -> io::Result<Side> {
    let (mut up, mut down) = (Direction::default(), Direction::default());
    let mut first = None;
    std::future::poll_fn(|cx| {
        let mut from_client = |n| on_read(Side::Client, n);
        let up_done = up.poll_copy(cx, &mut *client, &mut *host, &mut from_client)?;
        if up.ended && first.is_none() {
            first = Some(Side::Client);
        }
        let mut from_host = |n| on_read(Side::Host, n);
        let down_done = down.poll_copy(cx, &mut *host, &mut *client, &mut from_host)?;
        if down.ended && first.is_none() {
            first = Some(Side::Host);
        }
        match (up_done, down_done) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(first.unwrap_or(Side::Client))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Seconds (process clock) each kind of failed handshake was last logged:
/// one line per kind and minute, however many clients fail.
static LAST_LOGGED: [AtomicU64; HandshakeFailure::ALL.len()] =
    [const { AtomicU64::new(u64::MAX) }; HandshakeFailure::ALL.len()];
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Logs a failed handshake, once a minute per kind.
pub(crate) fn log_failure(why: HandshakeFailure, client: std::net::SocketAddr, listener: &str) {
    let now = clock_ms() / 1000;
    let Some(last) = LAST_LOGGED.get(why as usize) else {
        return;
    };
    let previous = last.load(Relaxed);
    if previous != u64::MAX && now.saturating_sub(previous) < FAILURE_LOG_INTERVAL.as_secs() {
        return;
    }
    if last
        .compare_exchange(previous, now, Relaxed, Relaxed)
        .is_ok()
    {
        if why == HandshakeFailure::NoCertificate {
            tracing::warn!(
                reason = why.as_str(),
                %client,
                listener,
                "TLS client refused: the listener's certificate from ACME is not issued yet (see the acme events; logged once a minute; counted in txlb_tls_handshake_errors_total)"
            );
            return;
        }
        tracing::warn!(
            reason = why.as_str(),
            %client,
            listener,
            "TLS handshake failed: client closed (logged once a minute per reason; counted in txlb_tls_handshake_errors_total)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Both ways at once through pipes of 1 KiB, a host that reads slowly
    /// (its side's writes wait: the bytes left over are kept and sent later),
    /// half-close passed on: byte exact, every byte counted, the client's end
    /// seen first.
    #[tokio::test]
    async fn copies_both_ways_byte_exact_under_backpressure_and_passes_half_close() {
        const LEN: usize = 300 * 1024;
        let (mut client, mut client_side) = tokio::io::duplex(1024);
        let (mut host_side, mut host) = tokio::io::duplex(1024);
        let counted = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let relay = async {
            copy(&mut client_side, &mut host_side, |side, n| {
                counted[side as usize].fetch_add(n, Relaxed);
            })
            .await
        };
        let client_talks = async {
            let (mut read, mut write) = tokio::io::split(&mut client);
            let send = async {
                write.write_all(&pattern(1, LEN)).await.unwrap();
                write.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let receive = read.read_to_end(&mut got);
            let ((), received) = tokio::join!(send, receive);
            received.unwrap();
            got
        };
        let host_talks = async {
            let (mut read, mut write) = tokio::io::split(&mut host);
            let send = async {
                write.write_all(&pattern(2, LEN)).await.unwrap();
                write.shutdown().await.unwrap();
            };
            let receive = async {
                let mut got = Vec::new();
                let mut chunk = [0u8; 700];
                loop {
                    tokio::task::yield_now().await;
                    match read.read(&mut chunk).await.unwrap() {
                        0 => break got,
                        n => got.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            let ((), got) = tokio::join!(send, receive);
            got
        };
        let (first, to_client, to_host) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(relay, client_talks, host_talks)
        })
        .await
        .expect("the copy ends");
        assert!(to_host == pattern(1, LEN), "the client's bytes, in order");
        assert!(to_client == pattern(2, LEN), "the host's bytes, in order");
        assert_eq!(counted[0].load(Relaxed) + counted[1].load(Relaxed), 2 * LEN);
        assert!(first.is_ok());
    }
}
