//! TLS 1.3 records after the handshake, without rustls: what a terminated
//! connection keeps once rustls has agreed the keys (`proxy/tls13.rs`).
//! rustls' buffered connection holds a 4 KiB record buffer, its state
//! machine and its queues for the connection's life; this holds the two
//! directions' keys, sequence numbers and traffic secrets (for key updates),
//! a few hundred bytes, and works in the caller's buffers.
//!
//! The keys come from rustls (`dangerous_extract_secrets`), the traffic
//! secrets from its key log (`capture`): the only way to a key update with
//! its buffered API. Records are sealed and opened with *ring*, rustls' own
//! crypto here (RFC 8446 §5.2-5.3: nonce = IV xor sequence number, the
//! record header as additional data; §7.2: key update).

use std::cell::RefCell;
use std::io;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use rustls::{AlertDescription, CipherSuite, ConnectionTrafficSecrets, ExtractedSecrets};

/// A record's header: type, legacy version, length.
pub(crate) const HEADER: usize = 5;
/// The longest ciphertext a record may carry (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = (1 << 14) + 256;
/// The longest plaintext a record may carry.
pub(crate) const MAX_PLAINTEXT: usize = 1 << 14;
/// The longest record on the wire: a buffer this long always holds one.
pub(crate) const MAX_RECORD: usize = HEADER + MAX_CIPHERTEXT;
/// What sealing adds to a record's plaintext: header, inner type, tag.
pub(crate) const OVERHEAD: usize = HEADER + 1 + TAG;
const TAG: usize = 16;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const KEY_UPDATE: u8 = 24;
const FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

/// The application traffic secrets of a handshake (RFC 8446 §7.1), kept
/// to derive the keys of a key update.
#[derive(Default, Clone)]
pub(crate) struct TrafficSecrets {
    client: Option<Secret>,
    server: Option<Secret>,
}

/// One traffic secret: a hash's length, at most SHA-384's.
#[derive(Clone)]
struct Secret {
    bytes: [u8; 48],
    len: u8,
}

impl Secret {
    fn new(bytes: &[u8]) -> Option<Secret> {
        let mut secret = Secret {
            bytes: [0; 48],
            len: u8::try_from(bytes.len()).ok()?,
        };
        secret.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(secret)
    }
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Not left in freed memory (rustls zeroes its own too).
        for b in &mut self.bytes {
            // SAFETY: a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

thread_local! {
    /// The secrets of the handshake being driven on this thread, while
    /// `capture` runs; `None` otherwise (the key log then logs nothing).
    static CAPTURING: RefCell<Option<TrafficSecrets>> = const { RefCell::new(None) };
}

/// Runs `step` of one connection's handshake, keeping in `into` the
/// application traffic secrets rustls derives meanwhile (through
/// [`CaptureSecrets`], the terminating configurations' key log). rustls calls
/// its key log synchronously from the step that derives them, so a
/// thread-local slot set around the step is that connection's.
pub(crate) fn capture<T>(into: &mut TrafficSecrets, step: impl FnOnce() -> T) -> T {
    CAPTURING.with(|slot| *slot.borrow_mut() = Some(std::mem::take(into)));
    let result = step();
    if let Some(got) = CAPTURING.with(|slot| slot.borrow_mut().take()) {
        *into = got;
    }
    result
}

/// The key log of terminating listeners: hands the application traffic
/// secrets to [`capture`], nothing else and nowhere else.
#[derive(Debug)]
pub(crate) struct CaptureSecrets;

impl rustls::KeyLog for CaptureSecrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        CAPTURING.with(|slot| {
            if let Some(secrets) = slot.borrow_mut().as_mut() {
                match label {
                    "CLIENT_TRAFFIC_SECRET_0" => secrets.client = Secret::new(secret),
                    "SERVER_TRAFFIC_SECRET_0" => secrets.server = Secret::new(secret),
                    _ => {}
                }
            }
        });
    }
    fn will_log(&self, label: &str) -> bool {
        matches!(label, "CLIENT_TRAFFIC_SECRET_0" | "SERVER_TRAFFIC_SECRET_0")
            && CAPTURING.with(|slot| slot.borrow().is_some())
    }
}

/// The TLS 1.3 suites this layer runs (all of *ring*'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20,
}

impl Suite {
    fn of(suite: CipherSuite) -> Option<Suite> {
        match suite {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => Some(Suite::Aes128Gcm),
            CipherSuite::TLS13_AES_256_GCM_SHA384 => Some(Suite::Aes256Gcm),
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => Some(Suite::Chacha20),
            _ => None,
        }
    }
    fn aead(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes128Gcm => &aead::AES_128_GCM,
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::Chacha20 => &aead::CHACHA20_POLY1305,
        }
    }
    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Suite::Aes256Gcm => hkdf::HKDF_SHA384,
            _ => hkdf::HKDF_SHA256,
        }
    }
    /// Records sealed under one key before it is replaced: AES-GCM's
    /// confidentiality limit (RFC 8446 §5.5, as rustls counts it).
    fn refresh_after(self) -> u64 {
        match self {
            Suite::Chacha20 => u64::MAX,
            _ => 1 << 24,
        }
    }
}

/// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446 §7.1).
fn expand_label(suite: Suite, secret: &[u8], label: &[u8], out: &mut [u8]) -> Option<()> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let length = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).ok()?];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    hkdf::Prk::new_less_safe(suite.hkdf(), secret)
        .expand(&info, Len(out.len()))
        .ok()?
        .fill(out)
        .ok()
}

/// One direction's key, IV, sequence number and secret.
struct Direction {
    key: LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
    secret: Secret,
}

impl Direction {
    fn new(suite: Suite, key: &[u8], iv: &[u8], seq: u64, secret: Secret) -> Option<Direction> {
        Some(Direction {
            key: LessSafeKey::new(UnboundKey::new(suite.aead(), key).ok()?),
            iv: iv.try_into().ok()?,
            seq,
            secret,
        })
    }

    /// The direction whose keys rustls handed over (`key`, `iv`, at `seq`),
    /// with the traffic secret they come from: `secret` (from its key log)
    /// or one of its next `generations`. The client's keys are a generation
    /// or more past the key log's when it sent key updates with its
    /// Finished (rustls took them while still handshaking): the secret that
    /// made them is found by deriving forward, so that its next key update
    /// is followed. Ours never are (rustls moves them only with an answer
    /// it queues, which extraction would drop: see `terminate`), so they
    /// get no generation past the key log's. Keys nothing explains are
    /// refused, never followed from a stale secret (that would reuse
    /// nonces).
    fn checked(
        suite: Suite,
        (secret, generations): (Secret, u8),
        key: &[u8],
        iv: &[u8],
        seq: u64,
    ) -> Option<Direction> {
        let mut secret = secret;
        for _ in 0..=generations {
            let (derived_key, derived_iv) = keys_of(suite, &secret)?;
            if derived_key[..suite.aead().key_len()] == *key && derived_iv[..] == *iv {
                return Direction::new(suite, key, iv, seq, secret);
            }
            secret = next_secret(suite, &secret)?;
        }
        None
    }

    /// The next generation (a key update): its secret, key and IV.
    fn next(&self, suite: Suite) -> Option<Direction> {
        let secret = next_secret(suite, &self.secret)?;
        let (key, iv) = keys_of(suite, &secret)?;
        Direction::new(suite, &key[..suite.aead().key_len()], &iv, 0, secret)
    }

    fn nonce(&mut self) -> io::Result<Nonce> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| invalid("TLS sequence number exhausted"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// The traffic secret after `secret` (a key update, RFC 8446 §7.2).
fn next_secret(suite: Suite, secret: &Secret) -> Option<Secret> {
    let mut next = secret.clone();
    let len = usize::from(secret.len);
    expand_label(
        suite,
        secret.as_bytes(),
        b"traffic upd",
        &mut next.bytes[..len],
    )?;
    Some(next)
}

/// The key (its first `key_len` bytes) and IV of a traffic secret (RFC
/// 8446 §7.3).
fn keys_of(suite: Suite, secret: &Secret) -> Option<([u8; 32], [u8; aead::NONCE_LEN])> {
    let mut key = [0u8; 32];
    expand_label(
        suite,
        secret.as_bytes(),
        b"key",
        &mut key[..suite.aead().key_len()],
    )?;
    let mut iv = [0u8; aead::NONCE_LEN];
    expand_label(suite, secret.as_bytes(), b"iv", &mut iv)?;
    Some((key, iv))
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// A client's records refused: why, and the fatal alert that tells it
/// (RFC 8446 §6.2), sent before the connection closes.
#[derive(Debug)]
struct Refused {
    alert: AlertDescription,
    why: &'static str,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (alert {:?} sent)", self.why, self.alert)
    }
}

impl std::error::Error for Refused {}

/// The client broke the record protocol: `alert` is its answer.
fn refuse(alert: AlertDescription, why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Refused { alert, why })
}

/// The alert a refusal of [`Records::open`] is answered with; `None` for
/// errors that take none (the client's own fatal alert: RFC 8446 §6.2 has
/// the receiver close without answering).
pub(crate) fn alert_of(error: &io::Error) -> Option<AlertDescription> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Refused>())
        .map(|refused| refused.alert)
}

/// What reading records found besides application data.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    /// Plaintext bytes, now at the front of the buffer.
    pub plaintext: usize,
    /// Bytes of whole records read (the rest is a record still coming).
    pub consumed: usize,
    /// The peer sent `close_notify`: nothing after it is read.
    pub closed: bool,
    /// The peer asked for our key update: [`Records::seal_key_update`].
    pub update_requested: bool,
}

/// Both directions of an established TLS 1.3 connection (the server's side).
pub(crate) struct Records {
    suite: Suite,
    /// From the client.
    rx: Direction,
    /// To the client.
    tx: Direction,
    /// `close_notify` was read: what follows is ignored.
    closed: bool,
    /// Key updates read since the last application data: each asks for
    /// work (and maybe an answer), so a client gets at most
    /// [`MAX_KEY_UPDATES`] in a row, as rustls allows.
    key_updates: u8,
    /// A refusal met after records whose plaintext was delivered: the next
    /// read's.
    failed: Option<io::Error>,
}

/// Most key updates a client may send without application data between.
const MAX_KEY_UPDATES: u8 = 32;

impl Records {
    /// The record layer a finished handshake agreed on: `secrets` extracted
    /// from rustls, `traffic` from its key log. `None` for anything but
    /// TLS 1.3 with a known suite and both secrets.
    pub(crate) fn new(
        suite: CipherSuite,
        secrets: ExtractedSecrets,
        traffic: TrafficSecrets,
    ) -> Option<Records> {
        let suite = Suite::of(suite)?;
        let direction = |(seq, keys): (u64, ConnectionTrafficSecrets), secret: (Secret, u8)| {
            let (key, iv) = match (&keys, suite) {
                (ConnectionTrafficSecrets::Aes128Gcm { key, iv }, Suite::Aes128Gcm)
                | (ConnectionTrafficSecrets::Aes256Gcm { key, iv }, Suite::Aes256Gcm)
                | (ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }, Suite::Chacha20) => {
                    (key, iv)
                }
                _ => return None,
            };
            Direction::checked(suite, secret, key.as_ref(), iv.as_ref(), seq)
        };
        Some(Records {
            suite,
            rx: direction(secrets.rx, (traffic.client?, MAX_KEY_UPDATES))?,
            tx: direction(secrets.tx, (traffic.server?, 0))?,
            closed: false,
            key_updates: 0,
            failed: None,
        })
    }

    /// Opens the whole records at the front of `data` in place: their
    /// application data moved to the front, a key update taken, an alert
    /// obeyed. A record still coming is left (from `consumed` on).
    /// A record the protocol does not allow is refused with the alert
    /// that answers it ([`alert_of`]).
    ///
    /// Records opened before a refused one are delivered first (the rest
    /// of `data` consumed, its plaintext at the front): the error is the
    /// next call's, and [`Records::failed`]'s.
    pub(crate) fn open(&mut self, data: &mut [u8]) -> io::Result<Opened> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        let mut opened = Opened::default();
        match self.open_into(data, &mut opened) {
            Ok(()) => Ok(opened),
            Err(error) if opened.plaintext > 0 => {
                self.failed = Some(error);
                opened.consumed = data.len();
                Ok(opened)
            }
            Err(error) => Err(error),
        }
    }

    /// The error met after records whose plaintext [`Records::open`]
    /// delivered, once.
    pub(crate) fn failed(&mut self) -> Option<io::Error> {
        self.failed.take()
    }

    fn open_into(&mut self, data: &mut [u8], opened: &mut Opened) -> io::Result<()> {
        use AlertDescription::*;
        while !self.closed && data.len() - opened.consumed >= HEADER {
            let at = opened.consumed;
            let header: [u8; HEADER] = data[at..at + HEADER].try_into().unwrap_or_default();
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len > MAX_CIPHERTEXT {
                return Err(refuse(RecordOverflow, "TLS record too long"));
            }
            if data.len() - at - HEADER < len {
                break;
            }
            // §5: an unexpected record type; §5.1: nothing after the
            // handshake is unprotected (not even change_cipher_spec).
            if header[0] != APPLICATION_DATA {
                return Err(refuse(
                    UnexpectedMessage,
                    "unprotected TLS record after the handshake",
                ));
            }
            let body = &mut data[at + HEADER..at + HEADER + len];
            let nonce = self.rx.nonce()?;
            let plain = self
                .rx
                .key
                .open_in_place(nonce, Aad::from(header), body)
                .map_err(|_| refuse(BadRecordMac, "TLS record did not decrypt"))?;
            // The content type is the last byte that is not padding.
            let Some(end) = plain.iter().rposition(|&b| b != 0) else {
                return Err(refuse(UnexpectedMessage, "TLS record without content type"));
            };
            let (content, typ) = (end, plain[end]);
            // The inner plaintext, padding included, is at most 2^14 + 1
            // bytes (RFC 8446 §5.4).
            if plain.len() > MAX_PLAINTEXT + 1 {
                return Err(refuse(RecordOverflow, "TLS record too long"));
            }
            match typ {
                APPLICATION_DATA => {
                    if content > 0 {
                        self.key_updates = 0;
                    }
                    let from = at + HEADER;
                    data.copy_within(from..from + content, opened.plaintext);
                    opened.plaintext += content;
                }
                ALERT => match plain[..content] {
                    [_, CLOSE_NOTIFY] => {
                        self.closed = true;
                        opened.closed = true;
                    }
                    [_, USER_CANCELED] => {}
                    // One alert, whole, per record (§5.1).
                    [] | [_] | [_, _, _, ..] => {
                        return Err(refuse(DecodeError, "malformed TLS alert"));
                    }
                    // Every other alert is fatal, whatever its level says
                    // (§6.2), and is not answered.
                    [_, _] => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "TLS alert from the client",
                        ));
                    }
                },
                HANDSHAKE => {
                    // Only key updates come after a server's handshake, one
                    // whole at the end of its record (RFC 8446 §5.1: a key
                    // change ends its record).
                    // A message cut at the record's end, or another after
                    // it, spans the key change (§5.1: unexpected_message);
                    // a KeyUpdate's body is one byte, 0 or 1 (§4.6.3).
                    match plain[..content] {
                        [KEY_UPDATE, 0, 0, 1, 0] => {}
                        [KEY_UPDATE, 0, 0, 1, 1] => opened.update_requested = true,
                        [KEY_UPDATE, 0, 0, 1, _] => {
                            return Err(refuse(IllegalParameter, "bad TLS key update request"));
                        }
                        [KEY_UPDATE, 0, 0, 1, _, ..] => {
                            return Err(refuse(
                                UnexpectedMessage,
                                "TLS key update not at the end of its record",
                            ));
                        }
                        [KEY_UPDATE, a, b, c, ..] if [a, b, c] != [0, 0, 1] => {
                            return Err(refuse(DecodeError, "bad TLS key update length"));
                        }
                        [KEY_UPDATE, ..] => {
                            return Err(refuse(UnexpectedMessage, "TLS key update cut"));
                        }
                        _ => {
                            return Err(refuse(
                                UnexpectedMessage,
                                "unexpected TLS handshake message",
                            ));
                        }
                    }
                    // Past the bound a key update is a message that may not
                    // come now: unexpected_message, as BoringSSL answers its
                    // own bound (RFC 8446 names none; rustls sends nothing).
                    self.key_updates += 1;
                    if self.key_updates > MAX_KEY_UPDATES {
                        return Err(refuse(
                            UnexpectedMessage,
                            "too many TLS key updates in a row",
                        ));
                    }
                    self.rx = self
                        .rx
                        .next(self.suite)
                        .ok_or_else(|| refuse(InternalError, "TLS key update failed"))?;
                }
                _ => {
                    return Err(refuse(UnexpectedMessage, "unexpected TLS content type"));
                }
            }
            opened.consumed = at + HEADER + len;
        }
        if self.closed {
            opened.consumed = data.len(); // ignored
        }
        Ok(())
    }

    /// Seals `plain` as records (up to [`MAX_PLAINTEXT`] each) into `out`,
    /// which must have room for them ([`OVERHEAD`] more per record, and a
    /// key update's); the length
    /// written. Updates our key first when it has sealed its share.
    pub(crate) fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        for chunk in plain.chunks(MAX_PLAINTEXT) {
            if self.tx.seq >= self.suite.refresh_after() {
                written += self.seal_key_update(&mut out[written..])?;
            }
            written += self.seal_one(APPLICATION_DATA, chunk, &mut out[written..])?;
        }
        Ok(written)
    }

    /// Seals our `KeyUpdate` (not asking the client's) and moves on to the
    /// next key: the length written ([`OVERHEAD`] + 5).
    pub(crate) fn seal_key_update(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.seal_one(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
        self.tx = self
            .tx
            .next(self.suite)
            .ok_or_else(|| invalid("TLS key update failed"))?;
        Ok(n)
    }

    /// Seals `close_notify`: the length written ([`OVERHEAD`] + 2).
    pub(crate) fn seal_close_notify(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.seal_one(ALERT, &[1, CLOSE_NOTIFY], out)
    }

    /// Seals a fatal `alert`: the length written ([`OVERHEAD`] + 2).
    pub(crate) fn seal_alert(
        &mut self,
        alert: AlertDescription,
        out: &mut [u8],
    ) -> io::Result<usize> {
        self.seal_one(ALERT, &[FATAL, u8::from(alert)], out)
    }

    fn seal_one(&mut self, typ: u8, content: &[u8], out: &mut [u8]) -> io::Result<usize> {
        let len = content.len() + 1 + TAG;
        let total = HEADER + len;
        let Some(record) = out.get_mut(..total) else {
            return Err(invalid("no room to seal a TLS record"));
        };
        let wire_len = u16::try_from(len).map_err(|_| invalid("TLS record too long"))?;
        let [hi, lo] = wire_len.to_be_bytes();
        let header = [APPLICATION_DATA, 3, 3, hi, lo];
        record[..HEADER].copy_from_slice(&header);
        let (inner, tag_out) = record[HEADER..].split_at_mut(content.len() + 1);
        inner[..content.len()].copy_from_slice(content);
        inner[content.len()] = typ;
        let nonce = self.tx.nonce()?;
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), inner)
            .map_err(|_| invalid("TLS record did not encrypt"))?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Arc;

    /// A rustls client and server, handshaken in memory with `suite`; the
    /// server's traffic secrets captured through its key log.
    fn handshake(
        suite: rustls::SupportedCipherSuite,
    ) -> (
        rustls::ClientConnection,
        rustls::ServerConnection,
        TrafficSecrets,
    ) {
        handshake_with(suite, false)
    }

    /// [`handshake`], the client's key update sent with its Finished when
    /// `update_with_finished`.
    fn handshake_with(
        suite: rustls::SupportedCipherSuite,
        update_with_finished: bool,
    ) -> (
        rustls::ClientConnection,
        rustls::ServerConnection,
        TrafficSecrets,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["r.example.com".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![suite];
        let provider = Arc::new(provider);
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        server.enable_secret_extraction = true;
        server.key_log = Arc::new(CaptureSecrets);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(client), "r.example.com".try_into().unwrap())
                .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        let mut traffic = TrafficSecrets::default();
        let mut glue = update_with_finished;
        while client.is_handshaking()
            || server.is_handshaking()
            || client.wants_write()
            || server.wants_write()
        {
            if glue && !client.is_handshaking() {
                client.refresh_traffic_keys().unwrap();
                glue = false;
            }
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            capture(&mut traffic, || {
                server.read_tls(&mut wire.as_slice()).unwrap();
                server.process_new_packets().unwrap();
            });
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        (client, server, traffic)
    }

    /// What the client sends, as bytes on the wire.
    fn from_client(client: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    /// `wire` read by the client: the plaintext it gives.
    fn to_client(client: &mut rustls::ClientConnection, wire: &[u8]) -> Vec<u8> {
        let mut wire = wire;
        let mut plain = Vec::new();
        while !wire.is_empty() {
            client.read_tls(&mut wire).unwrap();
            client.process_new_packets().unwrap();
            match client.reader().read_to_end(&mut plain) {
                Ok(_) => {}
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
        }
        plain
    }

    /// Records that open before a refused one in the same read are
    /// delivered; the refusal comes after them, once.
    #[test]
    fn records_before_a_refused_one_are_delivered_first() {
        use rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
        let (mut client, server, traffic) = handshake(TLS13_AES_128_GCM_SHA256);
        let name = server.negotiated_cipher_suite().unwrap().suite();
        let secrets = server.dangerous_extract_secrets().unwrap();
        let mut records = Records::new(name, secrets, traffic).expect("TLS 1.3 keys");
        client.writer().write_all(b"before the bad one").unwrap();
        let mut wire = from_client(&mut client);
        // A record that does not decrypt, right behind.
        wire.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0, 20]);
        wire.extend_from_slice(&[7u8; 20]);
        let opened = records
            .open(&mut wire)
            .expect("the good record's plaintext");
        assert_eq!(&wire[..opened.plaintext], b"before the bad one");
        assert_eq!(opened.consumed, wire.len());
        let error = records.failed().expect("then the refusal");
        assert_eq!(alert_of(&error), Some(AlertDescription::BadRecordMac));
        assert!(records.failed().is_none(), "once");
        // Alone, a bad record is refused at once.
        let mut bad = [
            APPLICATION_DATA,
            3,
            3,
            0,
            20,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
            7,
        ];
        assert!(records.open(&mut bad).is_err());
    }

    /// Our records speak with rustls' client in each suite: its records
    /// opened (several at once, one cut in two), ours sealed, its key
    /// update (asking for ours) followed both ways, its close_notify seen.
    #[test]
    fn records_speak_with_a_rustls_client_through_key_updates() {
        use rustls::crypto::ring::cipher_suite::*;
        for suite in [
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (mut client, server, traffic) = handshake(suite);
            let name = server.negotiated_cipher_suite().unwrap().suite();
            let secrets = server.dangerous_extract_secrets().unwrap();
            let mut records = Records::new(name, secrets, traffic).expect("TLS 1.3 keys");

            let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
            client.writer().write_all(b"hello ").unwrap();
            client.writer().write_all(&big).unwrap();
            let mut wire = from_client(&mut client);
            // All but the last 7 bytes: that record waits for the rest.
            let cut = wire.len() - 7;
            let opened = records.open(&mut wire[..cut]).unwrap();
            assert!(!opened.closed && !opened.update_requested);
            let mut got = wire[..opened.plaintext].to_vec();
            let mut rest = wire[opened.consumed..].to_vec();
            let opened = records.open(&mut rest).unwrap();
            assert_eq!(opened.consumed, rest.len());
            got.extend_from_slice(&rest[..opened.plaintext]);
            assert_eq!(&got[..6], b"hello ", "{name:?}");
            assert!(
                got[6..] == big[..],
                "{name:?}: the client's bytes, in order"
            );

            let mut sealed = vec![0u8; big.len() + 8 * OVERHEAD];
            let n = records.seal(&big, &mut sealed).unwrap();
            assert!(to_client(&mut client, &sealed[..n]) == big, "{name:?}");

            // The client's key update asks for ours: answered, then both
            // sides' next records are under the new keys.
            client.refresh_traffic_keys().unwrap();
            client.writer().write_all(b"after the update").unwrap();
            let mut wire = from_client(&mut client);
            let opened = records.open(&mut wire).unwrap();
            assert!(opened.update_requested, "{name:?}");
            assert_eq!(&wire[..opened.plaintext], b"after the update");
            let mut sealed = [0u8; 2 * OVERHEAD + 64];
            let mut n = records.seal_key_update(&mut sealed).unwrap();
            n += records.seal(b"ours too", &mut sealed[n..]).unwrap();
            assert_eq!(
                to_client(&mut client, &sealed[..n]),
                b"ours too",
                "{name:?}"
            );

            client.send_close_notify();
            client.writer().write_all(b"ignored").ok();
            let mut wire = from_client(&mut client);
            let opened = records.open(&mut wire).unwrap();
            assert!(opened.closed && opened.plaintext == 0, "{name:?}");
        }
    }

    /// Two views of one connection: ours and its mirror (the client's).
    fn pair(suite: Suite) -> (Records, Records) {
        let secret = |byte| Secret::new(&[byte; 32]).unwrap();
        let direction = |byte| {
            let zero = Direction::new(
                suite,
                &[0; 32][..suite.aead().key_len()],
                &[0; 12],
                0,
                secret(byte),
            )
            .unwrap();
            // A generation derived from the secret, as both ends would.
            let mut next = zero.next(suite).unwrap();
            next.secret = secret(byte);
            next
        };
        let ours = Records {
            suite,
            rx: direction(1),
            tx: direction(2),
            closed: false,
            key_updates: 0,
            failed: None,
        };
        let mirror = Records {
            suite,
            rx: direction(2),
            tx: direction(1),
            closed: false,
            key_updates: 0,
            failed: None,
        };
        (ours, mirror)
    }

    /// When our key has sealed AES-GCM's share of records, a key update of
    /// ours goes first and the records after it are under the next key,
    /// which the other end derives alike.
    #[test]
    fn our_key_is_updated_before_it_seals_too_many_records() {
        let (mut ours, mut mirror) = pair(Suite::Aes128Gcm);
        let limit = Suite::Aes128Gcm.refresh_after();
        ours.tx.seq = limit - 2;
        mirror.rx.seq = limit - 2;
        let plain: Vec<u8> = (0..4 * MAX_PLAINTEXT).map(|i| i as u8).collect();
        let mut sealed = vec![0u8; plain.len() + 8 * OVERHEAD];
        let n = ours.seal(&plain, &mut sealed).unwrap();
        assert_eq!(
            n,
            plain.len() + 5 * OVERHEAD + 5,
            "four records and a key update"
        );
        assert_eq!(ours.tx.seq, 2, "the new key sealed two");
        let opened = mirror.open(&mut sealed[..n]).unwrap();
        assert_eq!(opened.consumed, n);
        assert!(!opened.update_requested);
        assert!(sealed[..opened.plaintext] == plain[..]);
    }

    /// A key update sent with the client's Finished, asking for ours,
    /// reaches rustls while it still handshakes: it answers with its own,
    /// queued apart, and moves its key on. The answer is flushed by an
    /// empty write (as `terminate` does), so the connection stays with
    /// rustls; extracted without it, our keys are refused.
    #[test]
    fn a_key_update_with_the_clients_finished_is_answered_not_dropped() {
        use rustls::crypto::ring::cipher_suite::*;
        for suite in [TLS13_AES_128_GCM_SHA256, TLS13_CHACHA20_POLY1305_SHA256] {
            let (_, mut server, _) = handshake_with(suite, true);
            assert!(!server.wants_write());
            assert_eq!(server.writer().write(&[]).unwrap(), 0);
            assert!(server.wants_write(), "the answer is owed");
            let (_, server, traffic) = handshake_with(suite, true);
            let name = server.negotiated_cipher_suite().unwrap().suite();
            let secrets = server.dangerous_extract_secrets().unwrap();
            assert!(Records::new(name, secrets, traffic).is_none());
            // Without the glued update: nothing owed, nothing written.
            let (_, mut server, traffic) = handshake_with(suite, false);
            assert_eq!(server.writer().write(&[]).unwrap(), 0);
            assert!(!server.wants_write());
            let secrets = server.dangerous_extract_secrets().unwrap();
            assert!(Records::new(name, secrets, traffic).is_some());
        }
    }

    /// The client's keys are followed from whichever generation of the key
    /// log's secret made them; ours only from the key log's own.
    #[test]
    fn the_clients_keys_are_matched_to_their_generation() {
        let suite = Suite::Aes128Gcm;
        let zero = Secret::new(&[7; 32]).unwrap();
        let second = next_secret(suite, &next_secret(suite, &zero).unwrap()).unwrap();
        let (key, iv) = keys_of(suite, &second).unwrap();
        let key = &key[..suite.aead().key_len()];
        let found = Direction::checked(suite, (zero.clone(), MAX_KEY_UPDATES), key, &iv, 3)
            .expect("two generations on");
        assert_eq!(found.secret.as_bytes(), second.as_bytes());
        assert_eq!(found.seq, 3);
        assert!(Direction::checked(suite, (zero.clone(), 1), key, &iv, 3).is_none());
        assert!(Direction::checked(suite, (zero, 0), key, &iv, 3).is_none());
    }

    /// Keys that no generation of the key log's secrets explains (another
    /// connection's) are refused rather than followed.
    #[test]
    fn keys_of_another_connection_are_refused() {
        use rustls::crypto::ring::cipher_suite::*;
        let suite = TLS13_AES_128_GCM_SHA256;
        let (_, server, _) = handshake_with(suite, false);
        let (_, _, other) = handshake_with(suite, false);
        let name = server.negotiated_cipher_suite().unwrap().suite();
        let secrets = server.dangerous_extract_secrets().unwrap();
        assert!(Records::new(name, secrets, other).is_none());
    }

    /// A client gets [`MAX_KEY_UPDATES`] key updates in a row, then the
    /// connection ends; application data between lets it go on.
    #[test]
    fn key_updates_without_data_between_are_bounded() {
        let (mut ours, mut client) = pair(Suite::Aes128Gcm);
        let mut sealed = [0u8; 64];
        for round in 0..3 {
            for _ in 0..MAX_KEY_UPDATES {
                let n = client.seal_key_update(&mut sealed).unwrap();
                let opened = ours.open(&mut sealed[..n]).unwrap();
                assert_eq!(opened.consumed, n, "round {round}");
            }
            let n = client.seal(b"data", &mut sealed).unwrap();
            assert_eq!(ours.open(&mut sealed[..n]).unwrap().plaintext, 4);
        }
        for _ in 0..MAX_KEY_UPDATES {
            let n = client.seal_key_update(&mut sealed).unwrap();
            ours.open(&mut sealed[..n]).unwrap();
        }
        let n = client.seal_key_update(&mut sealed).unwrap();
        let refused = ours.open(&mut sealed[..n]).unwrap_err();
        assert_eq!(
            alert_of(&refused),
            Some(AlertDescription::UnexpectedMessage)
        );
    }

    /// What a client may not send after the handshake is refused, never a
    /// panic, each with the alert RFC 8446 answers it with (§5, §5.1, §5.2,
    /// §5.4, §4.6.3); a record's header alone waits for its body; the
    /// client's own fatal alert is refused without one.
    #[test]
    fn records_a_client_may_not_send_are_refused_with_their_alert() {
        use AlertDescription::*;
        let refused = |ours: &mut Records, wire: &mut [u8]| match ours.open(wire) {
            Ok(opened) => panic!("accepted: {opened:?}"),
            Err(e) => alert_of(&e),
        };
        let (mut ours, _) = pair(Suite::Chacha20);
        let mut header_only = [23u8, 3, 3, 0, 40];
        assert_eq!(ours.open(&mut header_only).unwrap().consumed, 0);
        let raw: [(&mut [u8], _, &str); 4] = [
            (&mut [22, 3, 3, 0, 1, 0], UnexpectedMessage, "plaintext"),
            (&mut [20, 3, 3, 0, 1, 1], UnexpectedMessage, "plaintext CCS"),
            (&mut [23, 3, 3, 0x41, 0x01], RecordOverflow, "too long"),
            (
                &mut [
                    23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                    19, 20,
                ],
                BadRecordMac,
                "bad tag",
            ),
        ];
        for (wire, alert, what) in raw {
            let (mut ours, _) = pair(Suite::Chacha20);
            assert_eq!(refused(&mut ours, wire), Some(alert), "{what}");
        }
        for (typ, content, alert) in [
            (HANDSHAKE, &[4u8, 0, 0, 1, 0][..], UnexpectedMessage), // NewSessionTicket
            (HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 7], IllegalParameter), // bad request
            (HANDSHAKE, &[KEY_UPDATE, 0, 0, 2, 0, 0], DecodeError), // bad length
            (HANDSHAKE, &[KEY_UPDATE, 0, 0], UnexpectedMessage),    // cut at the key change
            (
                HANDSHAKE,
                &[KEY_UPDATE, 0, 0, 1, 0, KEY_UPDATE, 0, 0, 1, 0],
                UnexpectedMessage,
            ), // two in one record
            (ALERT, &[2], DecodeError),                             // cut
            (ALERT, &[1, 0, 2, 0], DecodeError),                    // two in one record
            (20, &[1], UnexpectedMessage),                          // change_cipher_spec
            (25, &[1, 2], UnexpectedMessage),                       // heartbeat
        ] {
            let (mut ours, _) = pair(Suite::Chacha20);
            let (_, mut client) = pair(Suite::Chacha20);
            let mut sealed = [0u8; 64];
            let n = client.seal_one(typ, content, &mut sealed).unwrap();
            assert_eq!(
                refused(&mut ours, &mut sealed[..n]),
                Some(alert),
                "{typ} {content:?}"
            );
        }
        // Padding alone: no content type.
        let (mut ours, _) = pair(Suite::Chacha20);
        let (_, mut client) = pair(Suite::Chacha20);
        let mut sealed = [0u8; 64];
        let n = client.seal_one(0, &[0, 0], &mut sealed).unwrap();
        assert_eq!(
            refused(&mut ours, &mut sealed[..n]),
            Some(UnexpectedMessage)
        );
        // Padding past 2^14 + 1 bytes of inner plaintext.
        let (mut ours, _) = pair(Suite::Chacha20);
        let (_, mut client) = pair(Suite::Chacha20);
        let mut padded = vec![0u8; MAX_PLAINTEXT + 1];
        padded[..2].copy_from_slice(&[b'A', APPLICATION_DATA]);
        let mut sealed = vec![0u8; MAX_RECORD + 64];
        let n = client.seal_one(0, &padded, &mut sealed).unwrap();
        assert_eq!(
            refused(&mut ours, &mut sealed[..n]),
            Some(RecordOverflow),
            "overlong padding"
        );
        // The client's fatal alert ends the connection, unanswered.
        let (mut ours, _) = pair(Suite::Chacha20);
        let (_, mut client) = pair(Suite::Chacha20);
        let n = client.seal_alert(HandshakeFailure, &mut sealed).unwrap();
        assert_eq!(refused(&mut ours, &mut sealed[..n]), None);
        // user_canceled is only a warning.
        let (mut ours, _) = pair(Suite::Chacha20);
        let (_, mut mirror) = pair(Suite::Chacha20);
        let n = mirror
            .seal_one(ALERT, &[1, USER_CANCELED], &mut sealed)
            .unwrap();
        assert_eq!(ours.open(&mut sealed[..n]).unwrap().consumed, n);
    }

    /// Our alert is a record under our current key (after a key update of
    /// ours too) that the client opens: a fatal alert, its description.
    #[test]
    fn our_alert_is_sealed_under_the_current_key() {
        let (mut ours, mut client) = pair(Suite::Aes256Gcm);
        let mut sealed = [0u8; 3 * OVERHEAD + 16];
        let mut n = ours.seal(b"data", &mut sealed).unwrap();
        n += ours.seal_key_update(&mut sealed[n..]).unwrap();
        let alert_at = n;
        n += ours
            .seal_alert(AlertDescription::BadRecordMac, &mut sealed[n..])
            .unwrap();
        assert_eq!(n - alert_at, OVERHEAD + 2);
        let opened = client.open(&mut sealed[..alert_at]).unwrap();
        assert_eq!(&sealed[..opened.plaintext], b"data");
        // The client's side of `open` takes it as a fatal alert from its
        // peer; opened by hand, it is [fatal, bad_record_mac].
        let mut alert = sealed[alert_at..n].to_vec();
        let header: [u8; HEADER] = alert[..HEADER].try_into().unwrap();
        let nonce = client.rx.nonce().unwrap();
        let plain = client
            .rx
            .key
            .open_in_place(nonce, Aad::from(header), &mut alert[HEADER..])
            .unwrap();
        assert_eq!(plain, [FATAL, 20, ALERT]);
    }
}
