//! `retryEmpty`: failover past the connect. While a host has not sent its first
//! byte, the client's bytes are passed on and also kept; if the host then closes
//! or resets without a byte, they are replayed to another host and the client
//! sees one ordinary connection. HAProxy offers this only in HTTP mode.

use std::io;
use std::net::Shutdown;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The client's side of the story so far, kept across hosts.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// Every byte the client sent, for the next host.
    pub bytes: Vec<u8>,
    /// The client has sent FIN.
    pub client_done: bool,
    /// Too many bytes or too long a wait: no more retries for this client.
    pub given_up: bool,
}

/// How the wait for a host's first byte ended.
#[derive(Debug)]
pub(crate) enum FirstByte {
    /// The host sent something (still unread): copy as usual from here.
    Answered,
    /// No retry is possible any more (byte or time bound reached); copy as usual.
    GaveUp,
    /// The host closed or reset before sending anything.
    Failed(String),
}

impl Replay {
    /// Sends a new host everything the client sent so far.
    pub(crate) async fn replay_to(&self, host: &mut TcpStream) -> io::Result<()> {
        host.write_all(&self.bytes).await?;
        if self.client_done {
            SockRef::from(&*host).shutdown(Shutdown::Write)?;
        }
        Ok(())
    }

    /// Relays (and keeps) client bytes until the host sends its first byte, fails,
    /// or a bound is reached.
    pub(crate) async fn await_first_byte(
        &mut self,
        client: &TcpStream,
        host: &mut TcpStream,
        max_bytes: usize,
        timeout: Duration,
    ) -> FirstByte {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                biased;
                ready = host.readable() => {
                    if let Err(e) = ready {
                        return FirstByte::Failed(format!("closed without answering: {e}"));
                    }
                    let mut probe = [0u8; 1];
                    match host.peek(&mut probe).await {
                        Ok(0) => return FirstByte::Failed("closed without answering".into()),
                        Ok(_) => return FirstByte::Answered,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return FirstByte::Failed(format!("reset without answering: {e}")),
                    }
                }
                ready = client.readable(), if !self.client_done => {
                    if ready.is_err() {
                        // The client is gone: nothing left to save.
                        self.given_up = true;
                        return FirstByte::GaveUp;
                    }
                    let n = match client.try_read(&mut chunk) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(_) => {
                            self.given_up = true;
                            return FirstByte::GaveUp;
                        }
                    };
                    if n == 0 {
                        self.client_done = true;
                        if SockRef::from(&*host).shutdown(Shutdown::Write).is_err() {
                            return FirstByte::Failed("closed without answering".into());
                        }
                        continue;
                    }
                    if let Err(e) = host.write_all(&chunk[..n]).await {
                        // These bytes are kept below, so the next host gets them.
                        self.bytes.extend_from_slice(&chunk[..n]);
                        return FirstByte::Failed(format!("reset without answering: {e}"));
                    }
                    if self.bytes.len() + n > max_bytes {
                        self.given_up = true;
                        self.bytes = Vec::new();
                        return FirstByte::GaveUp;
                    }
                    self.bytes.extend_from_slice(&chunk[..n]);
                }
                _ = &mut deadline => {
                    self.given_up = true;
                    self.bytes = Vec::new();
                    return FirstByte::GaveUp;
                }
            }
        }
    }
}
