//! The copy loop: bytes both ways between client and host, honouring half-close.
//!
//! One hand-written future drives both directions of a connection in its task.
//! It waits through the sockets' own readiness slots (`poll_read_ready`,
//! `poll_write_ready`), so an idle connection holds no waiter nodes and no buffer:
//! a direction allocates its buffer when its socket turns readable and frees it
//! when the socket runs dry with nothing left to write.
//!
//! A streaming direction grows its buffer (fewer, larger system calls move bulk
//! data ~1.4× faster at a third less CPU than 256 KiB); on Linux, once a read
//! fills 256 KiB it moves by `splice` through a pipe instead (the bytes never
//! enter this process: faster again, and less CPU per byte). Buffers above
//! [`SMALL_BUFFER_MAX`], and pipes (as much as the largest buffer each), come
//! from a process-wide budget, so however many peers
//! stall with data in flight, memory stays bounded by
//! `connections × 2 × SMALL_BUFFER_MAX + LARGE_BUFFER_BUDGET`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
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
pub const COPY_BUFFER_MAX: usize = 1024 * 1024;

/// The largest buffer any direction may have without the large-buffer budget.
pub const SMALL_BUFFER_MAX: usize = 64 * 1024;

/// Bytes of buffers above [`SMALL_BUFFER_MAX`] all connections of the process
/// may hold at once: 32 streams at full size. Past it, streams stay at
/// [`SMALL_BUFFER_MAX`] until others give theirs back.
pub const LARGE_BUFFER_BUDGET: usize = 32 * 1024 * 1024;

/// The process's large-buffer budget.
static LARGE_BUFFERS: Budget = Budget::new(LARGE_BUFFER_BUDGET);

/// Buffers each worker thread keeps for reuse, by size (16 KiB, 64 KiB,
/// 256 KiB, 1 MiB): a fresh buffer costs zeroing, and a large one page faults
/// on every page again each time a stream pauses. At most 1 MiB of each of the
/// three smaller sizes and 4 MiB of the largest per thread, until a burst ends
/// (see [`release_pools`]).
const POOL_KEEP: [usize; 4] = [64, 16, 4, 4];

thread_local! {
    static POOL: RefCell<[Vec<Box<[u8]>>; 4]> = const {
        RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()])
    };
    /// The value of [`POOL_RELEASES`] this thread's pool last answered.
    static POOL_RELEASED: Cell<u64> = const { Cell::new(0) };
}

/// Counts requests to empty the pools; each thread empties its own when it sees
/// a new count ([`release_pool_if_asked`]).
static POOL_RELEASES: AtomicU64 = AtomicU64::new(0);

/// Asks every data-path thread to free its pooled buffers: a burst of
/// connections has ended (the idle sweeper decides), and what the pools keep
/// for the next one (up to 7 MiB a thread) would otherwise stay in RSS.
pub(crate) fn release_pools() {
    POOL_RELEASES.fetch_add(1, Relaxed);
}

/// Frees this thread's pooled buffers if [`release_pools`] was called since it
/// last looked. Each worker calls it from its periodic tick; a thread that never
/// does keeps its pool.
pub(crate) fn release_pool_if_asked() {
    let asked = POOL_RELEASES.load(Relaxed);
    if POOL_RELEASED.try_with(|seen| seen.replace(asked)) == Ok(asked) {
        return;
    }
    let _ = POOL.try_with(|pool| pool.borrow_mut().iter_mut().for_each(Vec::clear));
}

/// The pool a buffer of `len` bytes belongs in: the sizes a direction uses.
fn pool_class(len: usize) -> Option<usize> {
    const QUARTER_MAX: usize = COPY_BUFFER_MAX / 4;
    match len {
        COPY_BUFFER => Some(0),
        SMALL_BUFFER_MAX => Some(1),
        QUARTER_MAX => Some(2),
        COPY_BUFFER_MAX => Some(3),
        _ => None,
    }
}

/// A buffer of `size` bytes, from this thread's pool when it has one. Its
/// contents are stale bytes, never read: only what a read puts in is written.
fn pooled_buffer(size: usize) -> Box<[u8]> {
    pool_class(size)
        .and_then(|class| POOL.try_with(|pool| pool.borrow_mut()[class].pop()).ok()?)
        .unwrap_or_else(|| vec![0u8; size].into_boxed_slice())
}

fn return_to_pool(buf: Box<[u8]>) {
    let Some(class) = pool_class(buf.len()) else {
        return;
    };
    // A thread being torn down has no pool any more: the buffer is just freed.
    let _ = POOL.try_with(|pool| {
        let kept = &mut pool.borrow_mut()[class];
        if kept.len() < POOL_KEEP[class] {
            kept.push(buf);
        }
    });
}

/// A count of bytes shared by all connections, taken and given back with one
/// atomic operation when a buffer changes size (never per read or write).
#[derive(Debug)]
struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    const fn new(limit: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `bytes` if they fit.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Relaxed, Relaxed, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Relaxed);
    }
}

/// The buffer size after `size` was filled by a read: ×4 up to
/// [`COPY_BUFFER_MAX`], above [`SMALL_BUFFER_MAX`] only with bytes from
/// `budget` (else it stays). `reserved` is what this direction holds of the
/// budget.
fn grown(size: usize, reserved: &mut usize, budget: &Budget) -> usize {
    let next = (size * 4).min(COPY_BUFFER_MAX);
    if next <= SMALL_BUFFER_MAX {
        return next;
    }
    if budget.take(next - *reserved) {
        *reserved = next;
        next
    } else {
        // Stays where it is: what it has is small or already reserved.
        size
    }
}

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

/// What was read before the copy started and is not written yet: client
/// bytes read behind a PROXY header or a route's inspection, or what the
/// parking lot's relay read but could not write whole, or the error its read
/// met; one direction's (the lot's relay hands a connection over at the
/// first).
#[derive(Debug, Default)]
pub enum Carried {
    /// Nothing.
    #[default]
    Nothing,
    /// Bytes from this side, for the other, written first.
    Bytes(Side, Vec<u8>),
    /// This side's read failed: the copy ends with the error.
    Failed(Side, io::Error),
}

/// Copies in both directions until both are closed. When one side sends FIN, the
/// other side's write half is shut down and the opposite direction keeps flowing.
/// `carried` bytes are written first. `on_progress` hears of every chunk written
/// and every FIN passed on, so counters and idle clocks move while long
/// connections run. An error in either direction (a reset) ends the whole
/// connection.
pub fn copy_bidirectional<'a, F: Fn(Progress) + Unpin + 'a>(
    client: &'a TcpStream,
    host: &'a TcpStream,
    carried: Carried,
    on_progress: F,
) -> CopyBidirectional<'a, F> {
    let (mut up, mut down) = (Direction::default(), Direction::default());
    match carried {
        Carried::Nothing => {}
        Carried::Bytes(_, bytes) if bytes.is_empty() => {}
        Carried::Bytes(side, bytes) => {
            let direction = if side == Side::Client {
                &mut up
            } else {
                &mut down
            };
            direction.len = bytes.len();
            direction.buf = Some(bytes.into_boxed_slice());
        }
        Carried::Failed(Side::Client, error) => up.failed = Some(error),
        Carried::Failed(Side::Host, error) => down.failed = Some(error),
    }
    CopyBidirectional {
        client,
        host,
        up,
        down,
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
    /// Bytes of [`LARGE_BUFFERS`] held for `size` (0 while it is small).
    reserved: usize,
    /// The source sent FIN.
    read_done: bool,
    /// FIN passed on: this direction is finished.
    done: bool,
    /// The source failed after a read whose bytes are still to be written.
    failed: Option<io::Error>,
    total: u64,
    /// A stream's pipe, once it moves by `splice` (Linux): bytes go from
    /// socket to socket through the kernel, never copied to this process.
    /// `len` then counts the bytes in the pipe.
    #[cfg(target_os = "linux")]
    pipe: Option<splice::Pipe>,
}

impl Default for Direction {
    fn default() -> Self {
        Direction {
            buf: None,
            pos: 0,
            len: 0,
            size: COPY_BUFFER,
            reserved: 0,
            read_done: false,
            done: false,
            failed: None,
            total: 0,
            #[cfg(target_os = "linux")]
            pipe: None,
        }
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        self.release_buffer();
        self.shrink();
    }
}

impl Direction {
    /// Gives the buffer back (to the pool, if it has a pooled size).
    fn release_buffer(&mut self) {
        if let Some(buf) = self.buf.take() {
            return_to_pool(buf);
        }
    }

    /// Back to the first buffer size, giving back any large-buffer budget.
    fn shrink(&mut self) {
        self.size = COPY_BUFFER;
        if self.reserved > 0 {
            LARGE_BUFFERS.give_back(std::mem::take(&mut self.reserved));
        }
    }

    /// Moves bytes from `from` to `to` until it would block (Pending) or is done.
    /// `other_done`: the other direction has finished (read `to`'s FIN and
    /// passed it on), so the connection closes as soon as this one is done.
    ///
    /// Reads and writes are tried first: tokio answers `WouldBlock` without a
    /// system call while a socket is not ready. Readiness is polled (which
    /// registers the waker, under a lock) only before returning `Pending`.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        (from, to): (&TcpStream, &TcpStream),
        other_done: bool,
        on_bytes: &mut impl FnMut(usize),
    ) -> Poll<io::Result<()>> {
        loop {
            #[cfg(target_os = "linux")]
            if self.pipe.is_some() {
                return self.poll_splice(cx, (from, to), other_done, on_bytes);
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            // Write what was read.
            while self.pos < self.len {
                let buf = self.buf.as_deref().unwrap_or_default();
                match write(to, &buf[self.pos..self.len], self.read_done) {
                    Ok(n) => {
                        self.pos += n;
                        self.total += n as u64;
                        on_bytes(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready!(to.poll_write_ready(cx))?;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if let Some(error) = self.failed.take() {
                return Poll::Ready(Err(error));
            }
            if let Some(buf_len) = self.buf.as_ref().map(|buf| buf.len()) {
                if buf_len != self.size {
                    // A carried buffer, now written.
                    self.release_buffer();
                } else if self.len == self.size && self.size < COPY_BUFFER_MAX {
                    // The last read filled it: a stream. Read more at once.
                    #[cfg(target_os = "linux")]
                    if self.size >= SPLICE_FROM && !self.read_done && self.start_splice() {
                        continue;
                    }
                    self.size = grown(self.size, &mut self.reserved, &LARGE_BUFFERS);
                    if self.size != buf_len {
                        self.release_buffer();
                    }
                }
            }
            if self.read_done {
                self.release_buffer();
                return self.finish(to, other_done);
            }
            // Read more: the buffer is taken only once the socket is readable.
            let (size, slot) = (self.size, &mut self.buf);
            let read = read_draining(from, || {
                &mut slot.get_or_insert_with(|| pooled_buffer(size))[..]
            });
            match read {
                Ok(0) => self.read_done = true,
                Ok(n) => {
                    self.pos = 0;
                    self.len = n;
                    // Short: the socket is drained, unless an event came since
                    // (more bytes, or the source's FIN, which tokio keeps).
                    // Taking the EOF now lets the FIN leave with these bytes in
                    // one segment. An error (a reset) waits until these bytes
                    // are written. Not readable: `WouldBlock` at no cost.
                    let buf = self.buf.as_deref_mut().unwrap_or_default();
                    if n < buf.len() {
                        match read_draining(from, || &mut buf[n..]) {
                            Ok(0) => self.read_done = true,
                            Ok(more) => self.len += more,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => self.failed = Some(e),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if from.poll_read_ready(cx)?.is_pending() {
                        // Nothing to read now. A small buffer goes back at once;
                        // a stream's large one (held under the budget) stays for
                        // its next burst, until the connection parks (see
                        // `is_idle`).
                        if self.reserved == 0 {
                            self.release_buffer();
                            self.shrink();
                        }
                        return Poll::Pending;
                    }
                    // Readable again since the attempt: try once more.
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Direction {
    /// The source's FIN is in and every byte before it written: passes the
    /// FIN on, and the direction is done.
    fn finish(&mut self, to: &TcpStream, other_done: bool) -> Poll<io::Result<()>> {
        self.done = true;
        self.shrink();
        #[cfg(target_os = "linux")]
        drop(self.pipe.take());
        if other_done {
            // The close that follows at once sends this FIN.
            return Poll::Ready(Ok(()));
        }
        // Pass the FIN on; the peer may already be gone (NotConnected),
        // which is no error for us.
        match SockRef::from(to).shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Moves this stream by `splice` from now on, its buffer (written out)
    /// given back for a pipe that takes [`splice::PIPE_BYTES`] of the
    /// large-buffer budget in its place. False (copying on) when the budget
    /// or the system has no pipe for it.
    #[cfg(target_os = "linux")]
    fn start_splice(&mut self) -> bool {
        debug_assert!(self.pos == self.len);
        let more = splice::PIPE_BYTES.saturating_sub(self.reserved);
        if !LARGE_BUFFERS.take(more) {
            return false;
        }
        match splice::Pipe::new() {
            Ok(pipe) => {
                self.reserved += more;
                self.pipe = Some(pipe);
                self.release_buffer();
                (self.pos, self.len) = (0, 0);
                true
            }
            Err(error) => {
                LARGE_BUFFERS.give_back(more);
                tracing::debug!(%error, "no pipe for splice: the stream is copied");
                false
            }
        }
    }

    /// [`Direction::poll_copy`] for a stream with a pipe: fills the pipe from
    /// `from`, empties it into `to`, until either would block or the FIN is
    /// passed on. The pipe holds at most what the buffer it replaced did, and
    /// is filled only when empty, so a full pipe never looks like an empty
    /// socket.
    #[cfg(target_os = "linux")]
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        (from, to): (&TcpStream, &TcpStream),
        other_done: bool,
        on_bytes: &mut impl FnMut(usize),
    ) -> Poll<io::Result<()>> {
        use std::os::fd::AsRawFd;
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            let Some(pipe) = &self.pipe else {
                return Poll::Ready(Ok(()));
            };
            // The pipe is filled only when empty and the FIN is read only
            // then, so no FIN follows these bytes at once (no `MSG_MORE`).
            while self.len > 0 {
                match to.try_io(Interest::WRITABLE, || {
                    pipe.drain_to(to.as_raw_fd(), self.len)
                }) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        self.len -= n;
                        self.total += n as u64;
                        on_bytes(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready!(to.poll_write_ready(cx))?;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if self.read_done {
                return self.finish(to, other_done);
            }
            match from.try_io(Interest::READABLE, || pipe.fill_from(from.as_raw_fd())) {
                // 0 is the FIN, or an urgent mark (MSG_OOB) splice stops at:
                // the copy path's recv steps over it.
                Ok(0) if !at_fin(from) => {
                    self.pipe = None;
                    return self.poll_copy(cx, (from, to), other_done, on_bytes);
                }
                Ok(0) => self.read_done = true,
                Ok(n) => self.len = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if from.poll_read_ready(cx)?.is_pending() {
                        return Poll::Pending;
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Whether `socket`'s next read is its FIN (a peek returns 0).
#[cfg(target_os = "linux")]
fn at_fin(socket: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::uninit()];
    SockRef::from(socket).peek(&mut byte).ok() == Some(0)
}

/// The size of the buffer whose filling read makes a stream move by
/// `splice` instead of growing its buffer further.
#[cfg(target_os = "linux")]
const SPLICE_FROM: usize = COPY_BUFFER_MAX / 4;

/// Pipes for `splice`: bytes move from one socket to the other as page
/// references, not copied through this process.
#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// What a pipe asks to hold (`F_SETPIPE_SZ`; 1 MiB is what an
    /// unprivileged process may ask by default), and what it takes of the
    /// large-buffer budget: at most what the largest buffer would hold.
    pub(super) const PIPE_BYTES: usize = super::COPY_BUFFER_MAX;

    /// The most one fill of the pipe moves: a quarter of it, so that the
    /// two sockets take turns often (fills of the whole pipe measured a
    /// third slower on loopback, fills of 64 KiB no faster). The pipe's
    /// room beyond it is for skbs whose pages are only partly used.
    const FILL_BYTES: usize = PIPE_BYTES / 4;

    /// Pipes open in the process: each holds two descriptors that would
    /// otherwise serve a connection.
    static OPEN: AtomicUsize = AtomicUsize::new(0);

    /// The most pipes open at once: a sixteenth of the descriptor limit in
    /// pipe ends (at least four pipes), so that streams never take the
    /// descriptors new connections need.
    fn most_open() -> usize {
        static MOST: OnceLock<usize> = OnceLock::new();
        *MOST.get_or_init(|| crate::state::descriptor_share(usize::MAX, 32))
    }

    /// Both ends of a non-blocking pipe.
    #[derive(Debug)]
    pub(super) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Drop for Pipe {
        fn drop(&mut self) {
            OPEN.fetch_sub(1, Relaxed);
        }
    }

    impl Pipe {
        /// A pipe, unless [`most_open`] are open already or the system has
        /// none to give.
        pub(super) fn new() -> io::Result<Pipe> {
            if OPEN.fetch_add(1, Relaxed) >= most_open() {
                OPEN.fetch_sub(1, Relaxed);
                return Err(io::Error::other(
                    "the descriptors' share for pipes is in use",
                ));
            }
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: `fds` has room for the two descriptors pipe2 writes.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
                OPEN.fetch_sub(1, Relaxed);
                return Err(io::Error::last_os_error());
            }
            // SAFETY: both were just opened and are owned by nothing else.
            let pipe = unsafe {
                Pipe {
                    read: OwnedFd::from_raw_fd(fds[0]),
                    write: OwnedFd::from_raw_fd(fds[1]),
                }
            };
            // A smaller pipe (the system's limit is lower) still works.
            // SAFETY: an open pipe; F_SETPIPE_SZ takes an int.
            let _ = unsafe {
                libc::fcntl(
                    pipe.write.as_raw_fd(),
                    libc::F_SETPIPE_SZ,
                    PIPE_BYTES as libc::c_int,
                )
            };
            Ok(pipe)
        }

        /// Moves what `socket` has, up to [`FILL_BYTES`], into the empty
        /// pipe: 0 at the socket's FIN.
        pub(super) fn fill_from(&self, socket: RawFd) -> io::Result<usize> {
            splice(socket, self.write.as_raw_fd(), FILL_BYTES, 0)
        }

        /// Moves up to `len` bytes of the pipe to `socket`.
        pub(super) fn drain_to(&self, socket: RawFd, len: usize) -> io::Result<usize> {
            splice(self.read.as_raw_fd(), socket, len, 0)
        }
    }

    fn splice(from: RawFd, to: RawFd, len: usize, flags: libc::c_uint) -> io::Result<usize> {
        let flags = flags | libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        // SAFETY: open descriptors, no offsets (both are a socket or a pipe).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Writes like `try_write`. With `fin_follows` (the source has finished), the
/// kernel holds the bytes (`MSG_MORE`) for the `shutdown` or `close` that comes
/// right after, which sends them with the FIN in one segment: the peer answers
/// one segment instead of two.
#[inline]
fn write(to: &TcpStream, buf: &[u8], fin_follows: bool) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    if fin_follows {
        return to.try_io(Interest::WRITABLE, || {
            SockRef::from(to).send_with_flags(buf, libc::MSG_MORE)
        });
    }
    let _ = fin_follows;
    to.try_write(buf)
}

/// Reads like `try_read` into the buffer `buf` gives, called only when the
/// socket may be readable (so an idle direction takes no buffer). When the read
/// comes back short (the socket is drained) it also forgets the socket's
/// readiness, which saves the read that would only return EAGAIN. Tokio clears
/// it only if no event arrived since the readiness was sampled, before the
/// read, and keeps a FIN already seen.
#[inline]
fn read_draining<'b>(from: &TcpStream, buf: impl FnOnce() -> &'b mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut read = None;
    let result = from.try_io(Interest::READABLE, || {
        let buf = buf();
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

/// The future [`copy_bidirectional`] returns.
pub struct CopyBidirectional<'a, F> {
    client: &'a TcpStream,
    host: &'a TcpStream,
    up: Direction,
    down: Direction,
    first_to_close: Option<Side>,
    on_progress: F,
}

impl<F> CopyBidirectional<'_, F> {
    /// Whether the copy could stop here and start over later with nothing lost:
    /// both directions wait for bytes to read, none half-closed, no bytes held
    /// (a stream's empty buffer is dropped with the copy).
    pub fn is_idle(&self) -> bool {
        [&self.up, &self.down]
            .iter()
            .all(|d| d.pos == d.len && !d.read_done && !d.done && d.failed.is_none())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_by_four_and_take_large_sizes_from_the_budget() {
        let budget = Budget::new(2 * COPY_BUFFER_MAX);
        let mut reserved = 0;
        let mut size = COPY_BUFFER;
        let mut sizes = vec![size];
        while size < COPY_BUFFER_MAX {
            size = grown(size, &mut reserved, &budget);
            sizes.push(size);
        }
        assert_eq!(sizes, [16 << 10, 64 << 10, 256 << 10, 1 << 20]);
        assert_eq!(reserved, COPY_BUFFER_MAX);
        assert_eq!(budget.used.load(Relaxed), COPY_BUFFER_MAX);

        // A second stream takes the rest; a third stays small.
        let mut second = 0;
        assert_eq!(grown(256 << 10, &mut second, &budget), COPY_BUFFER_MAX);
        let mut third = 0;
        assert_eq!(
            grown(SMALL_BUFFER_MAX, &mut third, &budget),
            SMALL_BUFFER_MAX
        );
        assert_eq!(third, 0);

        // Once one gives its share back, the third grows.
        budget.give_back(second);
        assert_eq!(grown(SMALL_BUFFER_MAX, &mut third, &budget), 256 << 10);
        assert_eq!(budget.used.load(Relaxed), COPY_BUFFER_MAX + (256 << 10));
    }

    #[test]
    fn a_stream_that_cannot_grow_keeps_its_size() {
        let budget = Budget::new(256 << 10);
        let mut reserved = 0;
        assert_eq!(grown(SMALL_BUFFER_MAX, &mut reserved, &budget), 256 << 10);
        assert_eq!(grown(256 << 10, &mut reserved, &budget), 256 << 10);
        assert_eq!(reserved, 256 << 10);
        assert_eq!(budget.used.load(Relaxed), 256 << 10);
    }

    #[test]
    fn buffers_are_reused_per_size_up_to_the_pool_limit() {
        let first = pooled_buffer(COPY_BUFFER);
        let at = first.as_ptr();
        return_to_pool(first);
        let again = pooled_buffer(COPY_BUFFER);
        assert_eq!(again.as_ptr(), at, "the same buffer, not zeroed anew");
        assert_eq!(again.len(), COPY_BUFFER);
        // Other sizes are freed, not kept.
        return_to_pool(vec![0u8; 1000].into_boxed_slice());
        POOL.with_borrow(|pool| assert!(pool.iter().flatten().all(|b| b.len() != 1000)));
        // Each size keeps at most its limit.
        let many: Vec<_> = (0..10).map(|_| pooled_buffer(COPY_BUFFER_MAX)).collect();
        many.into_iter().for_each(return_to_pool);
        POOL.with_borrow(|pool| assert_eq!(pool[3].len(), POOL_KEEP[3]));
    }

    #[test]
    fn a_release_empties_the_pool_once() {
        release_pool_if_asked(); // whatever an earlier test on this thread asked
        POOL.with_borrow_mut(|pool| pool.iter_mut().for_each(Vec::clear));
        return_to_pool(pooled_buffer(COPY_BUFFER));
        release_pool_if_asked();
        POOL.with_borrow(|pool| assert_eq!(pool[0].len(), 1, "kept: nothing was asked"));
        release_pools();
        release_pool_if_asked();
        POOL.with_borrow(|pool| assert!(pool.iter().all(Vec::is_empty)));
        // Answered: buffers returned later stay until the next request.
        return_to_pool(pooled_buffer(COPY_BUFFER));
        release_pool_if_asked();
        POOL.with_borrow(|pool| assert_eq!(pool[0].len(), 1));
    }

    #[test]
    fn a_direction_gives_its_budget_back_when_dropped() {
        let before = LARGE_BUFFERS.used.load(Relaxed);
        let mut direction = Direction::default();
        direction.size = 256 << 10;
        direction.size = grown(direction.size, &mut direction.reserved, &LARGE_BUFFERS);
        assert_eq!(direction.size, COPY_BUFFER_MAX);
        assert!(LARGE_BUFFERS.used.load(Relaxed) >= before + COPY_BUFFER_MAX);
        drop(direction);
        assert!(LARGE_BUFFERS.used.load(Relaxed) < before + COPY_BUFFER_MAX);
    }

    /// The pipe tests share the process's count of pipes: one at a time.
    #[cfg(target_os = "linux")]
    static PIPE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[cfg(target_os = "linux")]
    #[test]
    fn pipes_past_their_share_of_descriptors_are_refused() {
        let _alone = PIPE_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let most = crate::state::descriptor_share(usize::MAX, 32);
        let mut pipes = Vec::new();
        while let Ok(pipe) = splice::Pipe::new() {
            pipes.push(pipe);
            assert!(pipes.len() <= most, "{} pipes, {most} allowed", pipes.len());
        }
        assert!(
            pipes.len() + 2 >= most,
            "{} pipes, {most} allowed",
            pipes.len()
        );
        pipes.pop();
        assert!(splice::Pipe::new().is_ok(), "one closed: one may open");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_splicing_direction_holds_its_pipe_under_the_budget_until_dropped() {
        let _alone = PIPE_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let before = LARGE_BUFFERS.used.load(Relaxed);
        let mut direction = Direction::default();
        assert!(direction.start_splice());
        assert!(direction.pipe.is_some());
        assert!(LARGE_BUFFERS.used.load(Relaxed) >= before + splice::PIPE_BYTES);
        drop(direction);
        assert!(LARGE_BUFFERS.used.load(Relaxed) < before + splice::PIPE_BYTES);
    }
}
