//! Descriptors and a JSON body over a Unix stream socket (`SCM_RIGHTS`): the
//! one message the running process sends the new one, and the new one's
//! answer.
//!
//! A frame is an 8-byte header (the body's length and the number of
//! descriptors, little endian) sent with the first descriptors, then a byte
//! per further batch of descriptors (the kernel takes at most
//! [`FDS_PER_MESSAGE`] in one message), then the body. Reads take exactly the
//! bytes they expect, so descriptors are never read past.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Descriptors sent in one message: the kernel's limit (`SCM_MAX_FD`) is 253.
pub(crate) const FDS_PER_MESSAGE: usize = 250;

/// The longest body read: the state of a configuration of a million hosts
/// fits many times over, and a broken peer cannot make us allocate more.
pub(crate) const MAX_BODY: usize = 1 << 30;

/// Sends `body` with `fds`.
pub(crate) fn send(socket: &UnixStream, body: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let length = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize <= MAX_BODY)
        .ok_or_else(|| io::Error::other("message too long"))?;
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&length.to_le_bytes());
    header[4..].copy_from_slice(&(fds.len() as u32).to_le_bytes());
    let mut batches = fds.chunks(FDS_PER_MESSAGE);
    send_with_fds(socket, &header, batches.next().unwrap_or(&[]))?;
    for batch in batches {
        send_with_fds(socket, &[0], batch)?;
    }
    (&*socket).write_all(body)
}

/// Receives one frame: its body and its descriptors (close-on-exec).
pub(crate) fn receive(socket: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    let mut header = [0u8; 8];
    let mut got = 0;
    while got < header.len() {
        let n = receive_with_fds(socket, &mut header[got..], &mut fds)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other process closed the socket",
            ));
        }
        got += n;
    }
    let length = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as usize;
    let count = u32::from_le_bytes(header[4..].try_into().unwrap_or_default()) as usize;
    if length > MAX_BODY {
        return Err(io::Error::other(format!("message of {length} bytes")));
    }
    while fds.len() < count {
        let mut byte = [0u8; 1];
        if receive_with_fds(socket, &mut byte, &mut fds)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    let mut body = vec![0u8; length];
    (&*socket).read_exact(&mut body)?;
    Ok((body, fds))
}

fn send_with_fds(socket: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let fd_bytes = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    // u64 words keep the control buffer aligned as cmsghdr wants.
    let mut control = vec![0u64; space.div_ceil(8).max(1)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives
    // the sendmsg call, and the control message is written within `control`
    // (CMSG_SPACE bytes for `raw`).
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        if !raw.is_empty() {
            message.msg_control = control.as_mut_ptr().cast();
            message.msg_controllen = space as _;
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(header),
                fd_bytes,
            );
        }
        let mut sent = 0;
        while sent == 0 {
            let n = libc::sendmsg(socket.as_raw_fd(), &message, libc::MSG_NOSIGNAL);
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            sent = n as usize;
        }
        // The descriptors went with the first byte; the rest is plain data.
        if sent < data.len() {
            (&*socket).write_all(&data[sent..])?;
        }
    }
    Ok(())
}

fn receive_with_fds(
    socket: &UnixStream,
    buffer: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE((FDS_PER_MESSAGE * std::mem::size_of::<RawFd>()) as u32) }
        as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: every pointer in `message` outlives recvmsg; the control
    // messages read are those the kernel wrote within `msg_controllen`, and
    // each descriptor they carry is new to this process, owned once here.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space as _;
        let n = loop {
            let n = libc::recvmsg(socket.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n as usize;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        };
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let bytes = (*header).cmsg_len as usize - (data as usize - header as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
        if message.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("descriptors were cut off"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_body_and_many_descriptors_arrive_whole() {
        let (a, b) = UnixStream::pair().unwrap();
        let files: Vec<std::fs::File> = (0..600)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let borrowed: Vec<BorrowedFd> = files.iter().map(|f| f.as_fd()).collect();
        let body = vec![7u8; 300_000];
        let reader = std::thread::spawn(move || receive(&b).unwrap());
        send(&a, &body, &borrowed).unwrap();
        let (got, fds) = reader.join().unwrap();
        assert_eq!(got, body);
        assert_eq!(fds.len(), 600);
        // Each is a descriptor of its own, usable.
        let meta = std::fs::File::from(fds.into_iter().nth(599).unwrap())
            .metadata()
            .unwrap();
        assert!(!meta.is_file());
    }

    #[test]
    fn a_closed_socket_is_an_error_not_a_hang() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert_eq!(
            receive(&b).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
