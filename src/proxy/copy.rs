//! The copy loop: bytes both ways between client and host, honouring half-close.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use socket2::SockRef;
use tokio::net::TcpStream;

/// Bytes read at most per system call in each direction. Also the most a
/// direction holds in memory: a slow reader stops the fast writer's reads
/// (back-pressure through the kernel's socket buffers).
pub const COPY_BUFFER: usize = 16 * 1024;

/// Which side of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client.
    Client,
    /// The host.
    Host,
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

const NOBODY: u8 = 0;
const CLIENT: u8 = 1;
const HOST: u8 = 2;

/// Copies in both directions until both are closed. When one side sends FIN, the
/// other side's write half is shut down and the opposite direction keeps flowing.
/// `on_bytes` is called after every chunk written (`Side::Client` = from the
/// client), so counters move while long connections run. An error in either
/// direction (a reset) ends the whole connection.
///
/// Both sockets are used through `&TcpStream` in one task: no split, no extra task,
/// and each direction holds a buffer only while it has data to move.
pub async fn copy_bidirectional(
    client: &TcpStream,
    host: &TcpStream,
    on_bytes: impl Fn(Side, usize),
) -> io::Result<Copied> {
    // Set once, by whichever direction sees EOF first; both run in this task.
    let first = AtomicU8::new(NOBODY);
    let up = async {
        let n = copy_one_way(client, host, |n| on_bytes(Side::Client, n)).await?;
        let _ = first.compare_exchange(NOBODY, CLIENT, Relaxed, Relaxed);
        Ok::<_, io::Error>(n)
    };
    let down = async {
        let n = copy_one_way(host, client, |n| on_bytes(Side::Host, n)).await?;
        let _ = first.compare_exchange(NOBODY, HOST, Relaxed, Relaxed);
        Ok(n)
    };
    let (client_to_host, host_to_client) = tokio::try_join!(up, down)?;
    Ok(Copied {
        client_to_host,
        host_to_client,
        first_to_close: if first.load(Relaxed) == HOST {
            Side::Host
        } else {
            Side::Client
        },
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
