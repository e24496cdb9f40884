//! The protocol checks (`redis`, `postgres`, `mysql`, `smtp`): the least of
//! each protocol that tells a server ready to serve from one that accepts
//! connections but refuses work (loading, starting up, shutting down, full).
//! Each reads through [`Talk`], so a reply is bounded by its buffer and the
//! check's timeout whatever the host sends; lengths the host announces are
//! checked against that buffer before anything waits for them.

use tokio::io::{AsyncRead, AsyncWrite};

use super::exchange::{READ_LIMIT, Talk, line_end, quote, trim_line};
use crate::config::RedisRole;

/// `type="redis"`: `PING` must answer `+PONG` (`-LOADING`, `-MASTERDOWN`,
/// `-NOAUTH` … are failures); with a `role`, `INFO replication` must say it.
pub(crate) async fn redis<S: AsyncRead + AsyncWrite + Unpin>(
    role: RedisRole,
    talk: &mut Talk<S>,
) -> Result<(), String> {
    talk.send(b"PING\r\n").await?;
    let end = talk
        .read_until(line_end)
        .await
        .map_err(|(got, why)| format!("expect +PONG, got {}{why}", quote(&got)))?;
    let line = trim_line(talk.take(end));
    if line != b"+PONG" {
        return Err(format!("expect +PONG, got {}", quote(line)));
    }
    let wanted = match role {
        RedisRole::Any => return Ok(()),
        RedisRole::Master => "master",
        RedisRole::Replica => "slave",
    };
    talk.send(b"INFO replication\r\n").await?;
    // A bulk string `$LEN\r\n…`; its `role:` line comes first, so the
    // reply is read only until that line is whole.
    let end = talk
        .read_until(|got| {
            if got.first().is_some_and(|&b| b != b'$') {
                return line_end(got);
            }
            let at = got.windows(5).position(|w| w == b"role:")?;
            line_end(&got[at..]).map(|n| at + n)
        })
        .await
        .map_err(|(got, why)| format!("INFO replication: got {}{why}", quote(&got)))?;
    let reply = talk.take(end);
    let Some(at) = reply.windows(5).position(|w| w == b"role:") else {
        return Err(format!("INFO replication: got {}", quote(reply)));
    };
    let said = trim_line(&reply[at + 5..]);
    if said == wanted.as_bytes() {
        Ok(())
    } else {
        Err(format!(
            "role {}, expected {}",
            String::from_utf8_lossy(said),
            role.name()
        ))
    }
}

/// The protocol version of a PostgreSQL startup message (3.0).
const POSTGRES_PROTOCOL: u32 = 3 << 16;

/// `type="postgres"`: a startup message for `user` must get an
/// authentication request (a password asked for) or, without one, a ready
/// session; not an `ErrorResponse` (`the database system is starting up`,
/// `… is not accepting connections`, `too many clients`, or a role that does
/// not exist).
pub(crate) async fn postgres<S: AsyncRead + AsyncWrite + Unpin>(
    user: &str,
    talk: &mut Talk<S>,
) -> Result<(), String> {
    let mut startup = Vec::with_capacity(64 + user.len());
    startup.extend_from_slice(&[0; 4]);
    startup.extend_from_slice(&POSTGRES_PROTOCOL.to_be_bytes());
    for part in ["user", user, "application_name", "txlb-check", ""] {
        startup.extend_from_slice(part.as_bytes());
        startup.push(0);
    }
    let len = u32::try_from(startup.len()).unwrap_or(u32::MAX);
    startup[..4].copy_from_slice(&len.to_be_bytes());
    talk.send(&startup).await?;
    // Messages: a type, then a length that counts itself. A password asked
    // for is enough; without one (trust) the server may still refuse the
    // session (a role that does not exist), so read on to ReadyForQuery.
    loop {
        let end = talk
            .read_until(|got| {
                let len = u32::from_be_bytes(got.get(1..5)?.try_into().ok()?) as usize;
                // Beyond the buffer (or below its own 4 bytes) it is no reply
                // of PostgreSQL's at this stage: say so at once.
                if !(4..READ_LIMIT).contains(&len) {
                    return Some(got.len().min(5));
                }
                Some(1 + len)
            })
            .await
            .map_err(|(got, why)| format!("postgres: got {}{why}", quote(&got)))?;
        let message = talk.take(end);
        match message.first() {
            // AuthenticationOk: the session goes on.
            Some(b'R') if message.get(5..9) == Some(&[0, 0, 0, 0]) => {}
            // A password (or another exchange) asked for.
            Some(b'R') if message.len() >= 9 => return Ok(()),
            Some(b'E') if message.len() > 5 => return Err(postgres_error(&message[5..])),
            // ParameterStatus, BackendKeyData, NoticeResponse.
            Some(b'S' | b'K' | b'N') if message.len() >= 5 => {}
            // ReadyForQuery: say goodbye (Terminate) rather than vanish.
            Some(b'Z') if message.len() >= 5 => {
                let _ = talk.send(b"X\0\0\0\x04").await;
                return Ok(());
            }
            _ => {
                return Err(format!(
                    "postgres: not a PostgreSQL reply: {}",
                    quote(message)
                ));
            }
        }
    }
}

/// An `ErrorResponse`'s fields as a reason: `postgres: FATAL 57P03 the
/// database system is starting up`.
fn postgres_error(fields: &[u8]) -> String {
    let (mut severity, mut code, mut message) = (&b""[..], &b""[..], &b""[..]);
    for field in fields.split(|&b| b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        match kind {
            b'S' => severity = value,
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let message = quote(message);
    format!(
        "postgres: {} {} {}",
        text(severity),
        text(code),
        message.trim_matches('"')
    )
}

/// `type="mysql"`: the server's greeting (protocol 10) must come, not an
/// error packet (`0xff`: too many connections, host blocked, …).
pub(crate) async fn mysql<S: AsyncRead + AsyncWrite + Unpin>(
    talk: &mut Talk<S>,
) -> Result<(), String> {
    // A packet: a 3-byte little-endian length, a sequence number, then that
    // many bytes.
    let end = talk
        .read_until(|got| {
            let header = got.get(..4)?;
            let len =
                usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
            if len == 0 || 4 + len > READ_LIMIT {
                return Some(4);
            }
            Some(4 + len)
        })
        .await
        .map_err(|(got, why)| format!("mysql: no greeting: got {}{why}", quote(&got)))?;
    let packet = talk.take(end);
    let payload = &packet[4..];
    match payload.first() {
        Some(10) => Ok(()),
        Some(0xff) if payload.len() >= 3 => {
            let code = u16::from_le_bytes([payload[1], payload[2]]);
            let mut message = &payload[3..];
            // Protocol 4.1 servers put `#` and a five-character SQL state first.
            if message.first() == Some(&b'#') && message.len() >= 6 {
                message = &message[6..];
            }
            Err(format!(
                "mysql: error {code}: {}",
                quote(message).trim_matches('"')
            ))
        }
        _ => Err(format!("mysql: not a greeting: {}", quote(packet))),
    }
}

/// `type="smtp"`: a `220` banner (over one or more lines), then `QUIT`.
pub(crate) async fn smtp<S: AsyncRead + AsyncWrite + Unpin>(
    talk: &mut Talk<S>,
) -> Result<(), String> {
    loop {
        let end = talk
            .read_until(line_end)
            .await
            .map_err(|(got, why)| format!("expect a 220 banner, got {}{why}", quote(&got)))?;
        let line = trim_line(talk.take(end));
        match line.get(..4) {
            // A line of a multi-line banner: the last one says it all.
            Some(b"220-") => continue,
            Some(b"220 ") => break,
            _ if line == b"220" => break,
            _ => return Err(format!("expect a 220 banner, got {}", quote(line))),
        }
    }
    talk.send(b"QUIT\r\n").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_errors_read_as_reasons() {
        let fields =
            b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0Fpostmaster.c\0\0";
        assert_eq!(
            postgres_error(fields),
            "postgres: FATAL 57P03 the database system is starting up"
        );
        assert_eq!(postgres_error(b"\xff\0\0"), "postgres:   ");
    }
}

/// A DNS query (RFC 1035 §4.1) for the `A` records of `name`, with `id`,
/// recursion desired. `name` was checked by the configuration's rules
/// (labels of 1 to 63 bytes, 253 in all).
pub(super) fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    // Flags: a standard query, recursion desired; one question.
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    // The root, then QTYPE A, QCLASS IN.
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Whether `reply` answers query `id` with a code other than SERVFAIL (2)
/// or REFUSED (5): `Ok`; `Err("")` for a datagram that is not its answer
/// (too short, another id, not a response); else the failure.
pub(super) fn dns_answer(id: u16, reply: &[u8]) -> Result<(), String> {
    let [a, b, flags, codes, ..] = *reply else {
        return Err(String::new());
    };
    if u16::from_be_bytes([a, b]) != id || flags & 0x80 == 0 || reply.len() < 12 {
        return Err(String::new());
    }
    match codes & 0x0f {
        2 => Err("SERVFAIL".into()),
        5 => Err("REFUSED".into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod dns_tests {
    use super::*;

    #[test]
    fn a_query_is_laid_out_as_rfc_1035_says() {
        let q = dns_query(0xabcd, "example.com.");
        assert_eq!(
            q,
            b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
        );
    }

    #[test]
    fn answers_are_told_by_id_flag_and_code() {
        let mut reply = dns_query(7, "example.com");
        reply[2] |= 0x80;
        assert_eq!(dns_answer(7, &reply), Ok(()));
        assert_eq!(dns_answer(8, &reply), Err(String::new()), "another id");
        reply[3] = 0x83; // NXDOMAIN: the server answers
        assert_eq!(dns_answer(7, &reply), Ok(()));
        reply[3] = 0x82;
        assert_eq!(dns_answer(7, &reply), Err("SERVFAIL".into()));
        reply[3] = 0x05;
        assert_eq!(dns_answer(7, &reply), Err("REFUSED".into()));
        assert_eq!(dns_answer(7, &reply[..5]), Err(String::new()), "short");
        let query = dns_query(7, "example.com");
        assert_eq!(dns_answer(7, &query), Err(String::new()), "not a response");
    }
}
