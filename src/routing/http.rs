//! An HTTP/1.x request's line and headers read byte by byte, resumable, up to
//! its first `Host` header or the end of its headers.

use crate::config::ClientProtocol;

use super::seen::{Anomaly, Seen, Sniffed, dns_name, lower};

/// How far a request was read: bytes before `at` are checked, `state` says
/// what the next one may be.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    at: usize,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// The request target; `empty` until its first byte.
    Target { empty: bool },
    /// `HTTP/1.` matched this far.
    Version(u8),
    /// The minor version digit.
    Minor,
    /// After the version: CR or LF.
    RequestEnd,
    /// A line's LF after its CR; `blank`: the line ending the headers.
    Lf { blank: bool },
    /// A header line's first byte, or the blank line's.
    LineStart,
    /// A header name; `host`: bytes of `host` matched so far (case-insensitive),
    /// or `None` once it differs.
    Name { host: Option<u8> },
    /// A header value, from `start`.
    Value { host: bool, start: usize },
    /// A header value's LF after its CR.
    ValueLf { host: bool, start: usize },
}

const VERSION: &[u8] = b"HTTP/1.";
const HOST: &[u8] = b"host";

/// A token character (RFC 9110, 5.6.2): a header name's.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte allowed in a header value: visible, space, tab, or obs-text.
fn value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

fn bad() -> Sniffed {
    Sniffed::Done(Seen::new(ClientProtocol::Http).with(Anomaly::BadHttp))
}

impl Progress {
    /// After a method and its space, `at` bytes.
    pub(super) fn new(at: usize) -> Progress {
        Progress {
            at,
            state: State::Target { empty: true },
        }
    }

    /// Reads the bytes received since the last call.
    pub(super) fn advance(&mut self, received: &[u8]) -> Sniffed {
        while let Some(&b) = received.get(self.at) {
            let at = self.at;
            self.at += 1;
            self.state = match self.state {
                State::Target { empty } => match b {
                    b' ' if !empty => State::Version(0),
                    b'!'..=b'~' | 0x80.. => State::Target { empty: false },
                    _ => return bad(),
                },
                State::Version(i) if b == VERSION[usize::from(i)] => {
                    if usize::from(i) + 1 == VERSION.len() {
                        State::Minor
                    } else {
                        State::Version(i + 1)
                    }
                }
                State::Minor if b.is_ascii_digit() => State::RequestEnd,
                State::RequestEnd | State::LineStart if b == b'\r' => State::Lf {
                    blank: matches!(self.state, State::LineStart),
                },
                State::RequestEnd if b == b'\n' => State::LineStart,
                State::Lf { blank: false } if b == b'\n' => State::LineStart,
                State::Lf { blank: true } | State::LineStart if b == b'\n' => {
                    return Sniffed::Done(
                        Seen::new(ClientProtocol::Http).with(Anomaly::HttpWithoutHost),
                    );
                }
                State::LineStart if tchar(b) => State::Name {
                    host: (b.to_ascii_lowercase() == HOST[0]).then_some(1),
                },
                State::Name { host } if tchar(b) => State::Name {
                    host: host
                        .filter(|&i| HOST.get(usize::from(i)) == Some(&b.to_ascii_lowercase()))
                        .map(|i| i + 1),
                },
                State::Name { host } if b == b':' => State::Value {
                    host: host == Some(HOST.len() as u8),
                    start: at + 1,
                },
                State::Value { host, start } => match b {
                    b'\r' => State::ValueLf { host, start },
                    b'\n' if host => return host_line(&received[start..at]),
                    b'\n' => State::LineStart,
                    _ if value_byte(b) => State::Value { host, start },
                    _ => return bad(),
                },
                State::ValueLf { host, start } if b == b'\n' => {
                    if host {
                        return host_line(&received[start..at - 1]);
                    }
                    State::LineStart
                }
                // Anything else breaks the syntax: a space before a header's
                // colon or starting a line (obs-fold), a bare CR, a control
                // byte, another version.
                _ => return bad(),
            };
        }
        Sniffed::NeedMore
    }
}

/// The verdict on a request whose first `Host` header has `value`.
fn host_line(value: &[u8]) -> Sniffed {
    let seen = Seen::new(ClientProtocol::Http);
    Sniffed::Done(match host_name(value) {
        Ok(Some(name)) => Seen {
            host: Some(name),
            ..seen
        },
        Ok(None) => seen.with(Anomaly::HttpWithoutHost),
        Err(()) => seen.with(Anomaly::BadHttp),
    })
}

/// A `Host` value as a routing key: trimmed, lower case, without its port, an
/// IPv6 address without brackets; `None` when empty; an error when not a
/// plausible host.
fn host_name(value: &[u8]) -> Result<Option<Box<str>>, ()> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Ok(None);
    }
    let (name, port) = if let Some(bracketed) = value.strip_prefix(b"[") {
        let close = bracketed.iter().position(|&b| b == b']').ok_or(())?;
        let address = &bracketed[..close];
        let v6 = address.contains(&b':')
            && address.len() <= 45
            && address
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !v6 {
            return Err(());
        }
        (Some(lower(address)), &bracketed[close + 1..])
    } else {
        let colon = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        (dns_name(&value[..colon]), &value[colon..])
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(b":")
            .is_some_and(|digits| digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit));
    match name {
        Some(name) if port_ok => Ok(Some(name)),
        _ => Err(()),
    }
}
