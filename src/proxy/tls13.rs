//! A terminated TLS 1.3 client after its handshake: the socket and the
//! record layer (`tls::record`), read and written through `AsyncRead` and
//! `AsyncWrite` as rustls' stream was, so `terminate::copy` runs it alike.
//!
//! Records are read into the caller's buffer (the copy loop's scratch, on
//! the worker's stack) and opened there; records are sealed on the stack and
//! written at once. Only what is in flight is kept on the heap (a record
//! half read, records the socket did not take, plaintext the caller had no
//! room for), and given back as soon as it is gone: idle, a connection
//! holds its keys and nothing else.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::record::{MAX_PLAINTEXT, MAX_RECORD, OVERHEAD, Records, alert_of};

/// Plaintext sealed per write: four records, one system call.
const WRITE_CHUNK: usize = 4 * MAX_PLAINTEXT;
/// A write this short is sealed in a smaller stack buffer.
const SMALL_WRITE: usize = 4096;
/// What sealing adds at most to a write: each record's overhead and a key
/// update of ours.
const SEAL_ROOM: usize = (WRITE_CHUNK / MAX_PLAINTEXT + 1) * OVERHEAD + 5;

/// A TLS 1.3 client's stream, its handshake done.
pub(crate) struct Tls13Stream {
    io: TcpStream,
    records: Records,
    /// The start of a record not all read yet.
    partial: Vec<u8>,
    /// Plaintext read and not yet taken (from the handshake's last read, or
    /// more than a small read buffer took).
    plain: Vec<u8>,
    plain_at: usize,
    /// Sealed records the socket has not taken yet.
    out: Vec<u8>,
    out_at: usize,
    /// `close_notify` read, or the socket's end.
    read_done: bool,
    /// `close_notify` or a fatal alert sealed: nothing more is written.
    write_done: bool,
    /// The client's records were refused (answered with an alert): every
    /// read and write after fails.
    refused: bool,
    /// A key update of ours is the last thing in `out`, not yet taken by
    /// the socket: it answers every request read until our next data
    /// (RFC 8446 §4.6.3), so a client that asks again and again while
    /// never reading queues one answer, not one per request.
    update_queued: bool,
}

impl Tls13Stream {
    /// `io` from here on through `records`; `plain`, plaintext rustls read
    /// already, comes first.
    pub(crate) fn new(io: TcpStream, records: Records, plain: Vec<u8>, closed: bool) -> Self {
        Tls13Stream {
            io,
            records,
            partial: Vec::new(),
            plain,
            plain_at: 0,
            out: Vec::new(),
            out_at: 0,
            read_done: closed,
            write_done: false,
            refused: false,
            update_queued: false,
        }
    }

    /// The client's socket.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.io
    }

    /// Writes what is queued in `out`; `Ready` once all is.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_at..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.out_at += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out = Vec::new(); // give the heap back
        self.out_at = 0;
        self.update_queued = false;
        Poll::Ready(Ok(()))
    }

    /// Writes `sealed` now, keeping what the socket does not take.
    fn send(&mut self, cx: &mut Context<'_>, sealed: &[u8]) -> io::Result<()> {
        let mut at = 0;
        if self.out.is_empty() {
            while at < sealed.len() {
                match Pin::new(&mut self.io).poll_write(cx, &sealed[at..]) {
                    Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => at += n,
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
        }
        self.out.extend_from_slice(&sealed[at..]);
        Ok(())
    }

    /// The client's records were refused with `error`: its alert (RFC 8446
    /// §6.2: "bad_record_mac", "record_overflow"...) sealed behind what is
    /// queued and written without waiting, once; then only errors, and the
    /// caller closes. A client that does not read just misses the alert:
    /// what the socket does not take at once is dropped, never waited for.
    fn refuse(&mut self, error: io::Error) -> io::Error {
        self.refused = true;
        self.read_done = true;
        self.partial = Vec::new();
        self.plain = Vec::new();
        if let Some(alert) = alert_of(&error)
            && !self.write_done
        {
            self.write_done = true;
            let mut sealed = [0u8; OVERHEAD + 2];
            if let Ok(n) = self.records.seal_alert(alert, &mut sealed) {
                self.out.extend_from_slice(&sealed[..n]);
                let _ = send_now(&self.io, &self.out[self.out_at..]);
            }
        }
        self.out = Vec::new();
        self.out_at = 0;
        error
    }

    /// Seals `plain` on the stack (`N` bytes: its records and room for a key
    /// update of ours) and sends it.
    fn seal_and_send<const N: usize>(
        &mut self,
        cx: &mut Context<'_>,
        plain: &[u8],
    ) -> io::Result<()> {
        let mut sealed = [0u8; N];
        let n = self.records.seal(plain, &mut sealed)?;
        self.update_queued = false;
        self.send(cx, &sealed[..n])
    }

    /// Reads and opens records into `buf` (room for a whole record): `Ready`
    /// with plaintext added to `buf`, or none at the end.
    fn poll_records(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Refused after records delivered last time: said now.
        if let Some(error) = self.records.failed() {
            return Poll::Ready(Err(self.refuse(error)));
        }
        let base = buf.filled().len();
        loop {
            let carried = self.partial.len();
            if carried > 0 {
                buf.put_slice(&self.partial);
                self.partial = Vec::new();
            }
            let before = buf.filled().len();
            match Pin::new(&mut self.io).poll_read(cx, buf) {
                Poll::Pending => {
                    if carried > 0 {
                        self.partial = buf.filled()[base..].to_vec();
                        buf.set_filled(base);
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let end = buf.filled().len() == before;
            let data = &mut buf.filled_mut()[base..];
            let opened = match self.records.open(data) {
                Ok(opened) => opened,
                Err(e) => return Poll::Ready(Err(self.refuse(e))),
            };
            if opened.consumed < data.len() {
                self.partial = data[opened.consumed..].to_vec();
            }
            buf.set_filled(base + opened.plaintext);
            if opened.update_requested && !self.update_queued {
                let mut sealed = [0u8; OVERHEAD + 5];
                let n = self.records.seal_key_update(&mut sealed)?;
                self.send(cx, &sealed[..n])?;
                self.update_queued = !self.out.is_empty();
            }
            if opened.closed {
                self.read_done = true;
                self.partial = Vec::new();
            }
            if opened.plaintext > 0 || self.read_done {
                return Poll::Ready(Ok(()));
            }
            if end {
                self.read_done = true;
                return Poll::Ready(match self.partial.is_empty() {
                    true => Ok(()),
                    false => Err(io::ErrorKind::UnexpectedEof.into()),
                });
            }
        }
    }
}

impl AsyncRead for Tls13Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refused {
            return Poll::Ready(Err(refused()));
        }
        if !this.out.is_empty() {
            // A key update of ours the socket did not take at once.
            let _ = this.poll_out(cx)?;
        }
        if this.plain_at < this.plain.len() {
            let n = (this.plain.len() - this.plain_at).min(buf.remaining());
            buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
            this.plain_at += n;
            if this.plain_at == this.plain.len() {
                this.plain = Vec::new();
                this.plain_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if this.read_done || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= MAX_RECORD {
            return this.poll_records(cx, buf);
        }
        // A small buffer: a record's room on the stack, the rest kept.
        let mut scratch = [MaybeUninit::<u8>::uninit(); MAX_RECORD];
        let mut room = ReadBuf::uninit(&mut scratch);
        ready!(this.poll_records(cx, &mut room))?;
        let got = room.filled();
        let n = got.len().min(buf.remaining());
        buf.put_slice(&got[..n]);
        if n < got.len() {
            this.plain = got[n..].to_vec();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tls13Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.refused {
            return Poll::Ready(Err(refused()));
        }
        ready!(this.poll_out(cx))?;
        if this.write_done {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let plain = &buf[..buf.len().min(WRITE_CHUNK)];
        match plain.len() <= SMALL_WRITE {
            // Most writes are short: not 64 KiB of stack zeroed for each.
            true => this.seal_and_send::<{ SMALL_WRITE + SEAL_ROOM }>(cx, plain)?,
            false => this.seal_and_send::<{ WRITE_CHUNK + SEAL_ROOM }>(cx, plain)?,
        }
        Poll::Ready(Ok(plain.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_out(cx)
    }

    /// `close_notify`, then the socket's write side shut (as rustls does).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_out(cx))?;
        if !this.write_done {
            this.write_done = true;
            let mut sealed = [0u8; OVERHEAD + 2];
            let n = this.records.seal_close_notify(&mut sealed)?;
            // Held back (MSG_MORE) for the FIN the shutdown adds to it: one
            // segment and one wake-up of the client, not two.
            let sent = socket2::SockRef::from(&this.io)
                .send_with_flags(&sealed[..n], libc::MSG_MORE | libc::MSG_NOSIGNAL)
                .unwrap_or(0);
            this.send(cx, &sealed[sent..n])?;
            ready!(this.poll_out(cx))?;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Writes what `io` takes of `bytes` now, never waiting: the system call is
/// made whatever tokio last saw of the socket's readiness (room may have
/// come since). For a last record on the way out.
fn send_now(io: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    let socket = socket2::SockRef::from(io);
    while !bytes.is_empty() {
        match socket.send_with_flags(bytes, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => bytes = &bytes[n..],
        }
    }
    Ok(())
}

/// What a refused client's stream answers after the refusal.
fn refused() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "TLS client refused")
}
