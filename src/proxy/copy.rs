//! The copy loop: bytes both ways between client and host, honouring half-close.

use std::io;
use std::net::Shutdown;

use socket2::SockRef;
use tokio::net::TcpStream;

/// Bytes read at most per system call in each direction. Also the most a
/// direction holds in memory: a slow reader stops the fast writer's reads
/// (back-pressure through the kernel's socket buffers).
pub const COPY_BUFFER: usize = 16 * 1024;

/// Totals of one finished connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Bytes from the client to the host.
    pub client_to_host: u64,
    /// Bytes from the host to the client.
    pub host_to_client: u64,
}

/// Copies in both directions until both are closed. When one side sends FIN, the
/// other side's write half is shut down and the opposite direction keeps flowing.
/// `on_bytes` is called after every chunk written (`true` = client to host), so
/// counters move while long connections run.
///
/// Both sockets are used through `&TcpStream` in one task: no split, no extra task,
/// and each direction holds a buffer only while it has data to move.
pub async fn copy_bidirectional(
    client: &TcpStream,
    host: &TcpStream,
    on_bytes: impl Fn(bool, usize),
) -> io::Result<Copied> {
    let up = copy_one_way(client, host, |n| on_bytes(true, n));
    let down = copy_one_way(host, client, |n| on_bytes(false, n));
    // try_join: an error in one direction (a reset) ends the whole connection.
    let (client_to_host, host_to_client) = tokio::try_join!(up, down)?;
    Ok(Copied {
        client_to_host,
        host_to_client,
    })
}

async fn copy_one_way(
    from: &TcpStream,
    to: &TcpStream,
    on_bytes: impl Fn(usize),
) -> io::Result<u64> {
    let mut total = 0u64;
    'readiness: loop {
        from.readable().await?;
        // Allocated on readiness and freed when the socket runs dry, so an idle
        // connection holds no buffer however busy it was before.
        let mut buf = vec![0u8; COPY_BUFFER];
        loop {
            let n = match from.try_read(&mut buf) {
                Ok(0) => break 'readiness,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue 'readiness,
                Err(e) => return Err(e),
            };
            write_all(to, &buf[..n]).await?;
            total += n as u64;
            on_bytes(n);
        }
    }
    // Pass the FIN on; the other direction keeps going. The peer may already be
    // gone (NotConnected), which is no error for us.
    match SockRef::from(to).shutdown(Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(total),
    }
}

async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
