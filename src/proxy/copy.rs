//! The copy loop: bytes both ways between client and host, honouring half-close.
//!
//! One hand-written future drives both directions of a connection in its task.
//! It waits through the sockets' own readiness slots (`poll_read_ready`,
//! `poll_write_ready`), so an idle connection holds no waiter nodes and no buffer:
//! a direction allocates its buffer when its socket turns readable and frees it
//! when the socket runs dry with nothing left to write.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The buffer a direction starts with when its socket turns readable: enough
/// for any request or response that fits one read.
pub const COPY_BUFFER: usize = 16 * 1024;

/// The largest buffer a streaming direction grows to (×4 each time a read fills
/// the buffer): bulk transfers move in fewer, larger system calls. Also the most
/// a direction holds in memory: a slow reader stops the fast writer's reads
/// (back-pressure through the kernel's socket buffers).
pub const COPY_BUFFER_MAX: usize = 256 * 1024;

/// Which side of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client.
    Client,
    /// The host.
    Host,
}

/// What the copy reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bytes from this side were written to the other.
    Bytes(Side, usize),
    /// This side sent FIN, and it was passed on: the connection is half-closed.
    Finished(Side),
}

/// Totals of one finished connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Bytes from the client to the host.
    pub client_to_host: u64,
    /// Bytes from the host to the client.
    pub host_to_client: u64,
    /// Who sent the first FIN.
    pub first_to_close: Side,
}

/// Copies in both directions until both are closed. When one side sends FIN, the
/// other side's write half is shut down and the opposite direction keeps flowing.
/// `early` holds client bytes already read (behind a PROXY header); they go to
/// the host first. `on_progress` hears of every chunk written and every FIN
/// passed on, so counters and idle clocks move while long connections run. An
/// error in either direction (a reset) ends the whole connection.
pub fn copy_bidirectional<'a>(
    client: &'a TcpStream,
    host: &'a TcpStream,
    early: Vec<u8>,
    on_progress: impl Fn(Progress) + Unpin + 'a,
) -> impl Future<Output = io::Result<Copied>> + 'a {
    let mut up = Direction::default();
    if !early.is_empty() {
        up.len = early.len();
        up.buf = Some(early.into_boxed_slice());
    }
    CopyBidirectional {
        client,
        host,
        up,
        down: Direction::default(),
        first_to_close: None,
        on_progress,
    }
}

/// One direction's progress.
struct Direction {
    /// Present only while there is data to move.
    buf: Option<Box<[u8]>>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// Bytes of `buf` read.
    len: usize,
    /// Size of the next buffer: grows while reads fill it, back to
    /// [`COPY_BUFFER`] when the direction goes idle.
    size: usize,
    /// The source sent FIN.
    read_done: bool,
    /// FIN passed on: this direction is finished.
    done: bool,
    total: u64,
}

impl Default for Direction {
    fn default() -> Self {
        Direction {
            buf: None,
            pos: 0,
            len: 0,
            size: COPY_BUFFER,
            read_done: false,
            done: false,
            total: 0,
        }
    }
}

impl Direction {
    /// Moves bytes from `from` to `to` until it would block (Pending) or is done.
    /// `other_done`: the other direction has finished (read `to`'s FIN and
    /// passed it on), so the connection closes as soon as this one is done.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        (from, to): (&TcpStream, &TcpStream),
        other_done: bool,
        on_bytes: &mut impl FnMut(usize),
    ) -> Poll<io::Result<()>> {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            // Write what was read.
            while self.pos < self.len {
                ready!(to.poll_write_ready(cx))?;
                let buf = self.buf.as_deref().unwrap_or_default();
                match to.try_write(&buf[self.pos..self.len]) {
                    Ok(n) => {
                        self.pos += n;
                        self.total += n as u64;
                        on_bytes(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if let Some(buf) = &self.buf {
                if buf.len() != self.size {
                    // An `early` buffer, now written.
                    self.buf = None;
                } else if self.len == self.size && self.size < COPY_BUFFER_MAX {
                    // The last read filled it: a stream. Read more at once.
                    self.size = (self.size * 4).min(COPY_BUFFER_MAX);
                    self.buf = None;
                }
            }
            if self.read_done {
                self.done = true;
                self.buf = None;
                if other_done {
                    // The close that follows at once sends this FIN.
                    return Poll::Ready(Ok(()));
                }
                // Pass the FIN on; the peer may already be gone (NotConnected),
                // which is no error for us.
                return match SockRef::from(to).shutdown(Shutdown::Write) {
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
                    _ => Poll::Ready(Ok(())),
                };
            }
            // Read more.
            if from.poll_read_ready(cx)?.is_pending() {
                // Idle: give the buffer back.
                self.buf = None;
                self.size = COPY_BUFFER;
                return Poll::Pending;
            }
            let size = self.size;
            let buf = self
                .buf
                .get_or_insert_with(|| vec![0u8; size].into_boxed_slice());
            match read_draining(from, buf) {
                Ok(0) => self.read_done = true,
                Ok(n) => {
                    self.pos = 0;
                    self.len = n;
                }
                // Readiness was stale: poll again, which registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Reads like `try_read`, and when the read comes back short (the socket is
/// drained) also forgets the socket's readiness, which saves the read that
/// would only return EAGAIN. Tokio clears it only if no event arrived since the
/// readiness was sampled, before the read, and keeps a FIN already seen.
fn read_draining(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut read = None;
    let result = from.try_io(Interest::READABLE, || {
        let n = (&*SockRef::from(from)).read(buf)?;
        read = Some(n);
        if n > 0 && n < buf.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match read {
        Some(n) => Ok(n),
        None => result,
    }
}

struct CopyBidirectional<'a, F> {
    client: &'a TcpStream,
    host: &'a TcpStream,
    up: Direction,
    down: Direction,
    first_to_close: Option<Side>,
    on_progress: F,
}

impl<F: Fn(Progress) + Unpin> Future for CopyBidirectional<'_, F> {
    type Output = io::Result<Copied>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin.
        let this = self.get_mut();
        let on_progress = &this.on_progress;
        let up_was_done = this.up.done;
        let up = this
            .up
            .poll_copy(cx, (this.client, this.host), this.down.done, &mut |n| {
                on_progress(Progress::Bytes(Side::Client, n))
            })?;
        let down_was_done = this.down.done;
        let down = this
            .down
            .poll_copy(cx, (this.host, this.client), this.up.done, &mut |n| {
                on_progress(Progress::Bytes(Side::Host, n))
            })?;
        for (side, was, now) in [
            (Side::Client, up_was_done, this.up.done),
            (Side::Host, down_was_done, this.down.done),
        ] {
            if now && !was {
                this.first_to_close.get_or_insert(side);
                on_progress(Progress::Finished(side));
            }
        }
        if up.is_pending() || down.is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(Copied {
            client_to_host: this.up.total,
            host_to_client: this.down.total,
            first_to_close: this.first_to_close.unwrap_or(Side::Client),
        }))
    }
}
