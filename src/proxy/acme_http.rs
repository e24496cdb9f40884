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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair: (client side, server side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    fn answering() -> Challenges {
        let challenges = Challenges::default();
        challenges.answer_http("tok_1-x", "tok_1-x.thumb");
        challenges
    }

    #[tokio::test]
    async fn a_request_for_a_token_answered_gets_its_key_authorization() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"GET /.well-known/acme-challenge/tok_1-x HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        assert!(answer(&mut server, b"", &answering(), Duration::from_secs(5)).await);
        let mut response = String::new();
        client.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\ntok_1-x.thumb"), "{response}");
    }

    #[tokio::test]
    async fn other_clients_keep_every_byte_in_their_socket() {
        for sent in [
            &b"GET /.well-known/acme-challenge/other HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x00",
            b"POST /.well-known/acme-challenge/tok_1-x HTTP/1.1\r\n\r\n",
        ] {
            let (mut client, mut server) = pair().await;
            client.write_all(sent).await.unwrap();
            let started = std::time::Instant::now();
            assert!(!answer(&mut server, b"", &answering(), Duration::from_secs(5)).await);
            // Decided on what was there, not on the timeout.
            assert!(started.elapsed() < Duration::from_secs(2));
            let mut kept = vec![0u8; sent.len()];
            server.read_exact(&mut kept).await.unwrap();
            assert_eq!(kept, sent);
        }
    }

    #[tokio::test]
    async fn a_stalled_or_silent_client_passes_on_after_the_wait() {
        for sent in [&b"GET /.well-"[..], b""] {
            let (mut client, mut server) = pair().await;
            client.write_all(sent).await.unwrap();
            let started = std::time::Instant::now();
            let wait = Duration::from_millis(300);
            assert!(!answer(&mut server, b"", &answering(), wait).await);
            assert!(started.elapsed() < Duration::from_secs(2));
            // The part sent is still there for the service.
            client.write_all(b"!").await.unwrap();
            let mut kept = vec![0u8; sent.len() + 1];
            server.read_exact(&mut kept).await.unwrap();
            assert_eq!(&kept[..sent.len()], sent);
        }
    }
}
