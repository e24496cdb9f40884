//! Listeners that terminate TLS: the handshake (bounded by the listener's
//! `handshakeTimeout`), what it tells for routing and the logs, and the copy
//! loop of a connection with TLS on either side (a terminated client, a host
//! TLS is originated towards, or both).
//!
//! Plain-TCP connections never come here: their copy loop (`copy.rs`) works
//! on the sockets' readiness and parks idle connections; one with TLS goes
//! through rustls's buffers, so it is copied with tokio's generic loop and
//! never parked.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::copy::Side;
use super::listener::Terminating;
use crate::config::ClientProtocol;
use crate::routing::Seen;
use crate::state::clock_ms;
use crate::tls::acme::ACME_TLS_ALPN;
use crate::tls::{HandshakeFailure, Session};

/// Buffer of each direction of a terminated connection's copy: a TLS
/// record's largest payload.
const TLS_COPY_BUFFER: usize = 16 * 1024;

/// A client's socket, with the bytes already read from it (behind a PROXY
/// header) given back first: what rustls reads the handshake from.
#[derive(Debug)]
pub(crate) struct Prefixed {
    early: Vec<u8>,
    at: usize,
    io: TcpStream,
}

impl Prefixed {
    /// `io`, whose first bytes are `early`.
    pub(crate) fn new(early: Vec<u8>, io: TcpStream) -> Prefixed {
        Prefixed { early, at: 0, io }
    }

    /// The socket.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.io
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.early.len() {
            let n = (this.early.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.early[this.at..this.at + n]);
            this.at += n;
            if this.at == this.early.len() {
                this.early = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
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
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A terminated client's stream: TLS over its socket.
pub(crate) type TlsClient = TlsStream<Prefixed>;

/// A finished handshake.
pub(crate) struct Handshaken {
    /// The client, speaking TLS.
    pub stream: Box<TlsClient>,
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
            if acme.slot.current().is_none() {
                return Err(HandshakeFailure::NoCertificate);
            }
        }
        let stream =
            tokio::time::timeout_at(deadline, start.into_stream(tls.terminator.server.clone()))
                .await
                .map_err(|_| HandshakeFailure::Timeout)?
                .map_err(|e| HandshakeFailure::of(&e))?;
        let session = Session::of(stream.get_ref().1);
        Ok(Handshaken {
            stream: Box::new(stream),
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

/// A side of a terminated connection, telling `on_read` of every chunk read
/// and `first` which side reached its end first. A TLS client that closes
/// without `close_notify` (most do) has reached its end, as a TCP client
/// sending FIN.
struct Counted<'a, S: ?Sized, F> {
    io: &'a mut S,
    side: Side,
    /// 0 until a side ends; then 1 (client) or 2 (host).
    first: &'a AtomicU8,
    on_read: &'a F,
}

impl<S: AsyncRead + Unpin + ?Sized, F: Fn(Side, usize)> AsyncRead for Counted<'_, S, F> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match Pin::new(&mut *this.io).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        };
        if let Poll::Ready(Ok(())) = polled {
            let n = buf.filled().len() - before;
            if n == 0 {
                let side = if this.side == Side::Client { 1 } else { 2 };
                let _ = this.first.compare_exchange(0, side, Relaxed, Relaxed);
            } else {
                (this.on_read)(this.side, n);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin + ?Sized, F> AsyncWrite for Counted<'_, S, F> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
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
    let first = AtomicU8::new(0);
    let mut client = Counted {
        io: client,
        side: Side::Client,
        first: &first,
        on_read: &on_read,
    };
    let mut host = Counted {
        io: host,
        side: Side::Host,
        first: &first,
        on_read: &on_read,
    };
    tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut host,
        TLS_COPY_BUFFER,
        TLS_COPY_BUFFER,
    )
    .await?;
    Ok(match first.load(Relaxed) {
        2 => Side::Host,
        _ => Side::Client,
    })
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
