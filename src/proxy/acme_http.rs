//! Listeners with `acmeHttp="true"`: while txlb has an ACME `http-01`
//! challenge to answer, a client whose first bytes are
//! `GET /.well-known/acme-challenge/TOKEN` for that token gets the key
//! authorization from txlb itself. Every other client goes to the service
//! untouched: its bytes are only peeked at (left in the socket), and only
//! while a challenge is being answered, so the listener's clients see no
//! difference the rest of the time.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::tls::acme::{Challenges, HTTP_CHALLENGE_PREFIX};

/// Most bytes of a request line looked at: `GET`, the path with a token
/// (43 characters from Let's Encrypt), the version.
const MAX_REQUEST_LINE: usize = 512;
/// Most bytes of a validation request read before it is answered.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Pause between two looks at a client that sent part of a request line.
const PEEK_PAUSE: Duration = Duration::from_millis(10);

/// Answers `client` (whose first bytes are `early`, then what its socket
/// holds) if it asks for a challenge being answered; `true`: it was
/// answered and is done. Waits at most `wait` for its request line.
pub(crate) async fn answer(
    client: &mut TcpStream,
    early: &[u8],
    challenges: &Challenges,
    wait: Duration,
) -> bool {
    let deadline = Instant::now() + wait;
    let Some(token) = requested_token(client, early, deadline).await else {
        return false;
    };
    let Some(key_authorization) = challenges.http(&token) else {
        return false;
    };
    // The request is ours: read its head (bounded), answer, close.
    let mut head = early.to_vec();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{key_authorization}",
        key_authorization.len()
    );
    let _ = tokio::time::timeout_at(deadline, async {
        client.write_all(response.as_bytes()).await?;
        client.shutdown().await
    })
    .await;
    tracing::info!(token, "answered an ACME http-01 validation");
    true
}

/// The token of a `GET /.well-known/acme-challenge/TOKEN HTTP/1.x` request
/// line at the start of `early` and the socket's bytes (peeked, not read),
/// or `None` as soon as they are something else.
async fn requested_token(client: &TcpStream, early: &[u8], deadline: Instant) -> Option<String> {
    let prefix = format!("GET {HTTP_CHALLENGE_PREFIX}");
    let prefix = prefix.as_bytes();
    let mut buf = [0u8; MAX_REQUEST_LINE];
    loop {
        let n = match early.len() >= MAX_REQUEST_LINE {
            true => 0,
            false => {
                let room = MAX_REQUEST_LINE - early.len();
                match tokio::time::timeout_at(deadline, client.peek(&mut buf[..room])).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) if early.is_empty() => return None,
                    Ok(Ok(n)) => n,
                    _ => 0,
                }
            }
        };
        let seen: Vec<u8> = early.iter().chain(&buf[..n]).copied().collect();
        let common = seen.len().min(prefix.len());
        if seen[..common] != prefix[..common] {
            return None;
        }
        if let Some(end) = seen.iter().position(|&b| b == b'\n') {
            let line = std::str::from_utf8(&seen[..end])
                .ok()?
                .trim_end_matches('\r');
            let target = line.strip_prefix("GET ")?.split(' ').next()?;
            let token = target.strip_prefix(HTTP_CHALLENGE_PREFIX)?;
            let valid = !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            return valid.then(|| token.to_string());
        }
        if seen.len() >= MAX_REQUEST_LINE || n == 0 && !early.is_empty() {
            return None;
        }
        // Part of a request line: look again once more may have come.
        if Instant::now() + PEEK_PAUSE > deadline {
            return None;
        }
        tokio::time::sleep(PEEK_PAUSE).await;
    }
}
