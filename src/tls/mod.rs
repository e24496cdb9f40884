//! TLS termination's certificates: read, checked and indexed by name, once, for
//! `txlb check`, start and every reload alike ([`load`]); the handshake's
//! certificate choice by SNI ([`ByName`]); what a finished handshake tells
//! ([`Session`]) and the counters of a terminating listener ([`TlsCounters`]).
//!
//! The data path holds a [`Terminator`] (an `Arc`, swapped whole with the
//! listener's settings), so a reload that re-reads the files changes nothing
//! for connections already open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ClientAuth, ListenerTls, Location, TlsCert, TlsVersion};

pub mod acme;
pub mod origin;
pub(crate) mod record;

pub use acme::{AcmeCerts, AcmeSlot};
pub use origin::{OriginTls, Originator};

/// Largest PEM file read (a chain of a few certificates is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// A certificate this close to its expiry is warned about (log, page, metrics).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A certificate or key that does not load: where the configuration names
/// it (`FILE:LINE:COL: ` when read from a file) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", at.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
pub struct TlsError {
    /// Where the file is named.
    pub at: Option<Location>,
    /// What is wrong with it.
    pub message: String,
}

/// What one certificate says, for the page, `/metrics`, `txlb check` and the
/// expiry warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The certificate file.
    pub file: PathBuf,
    /// The DNS names it serves (subject alternative names; the subject's
    /// common name when it has none), lower case, `*.` wildcards kept.
    pub names: Vec<String>,
    /// Its subject, as `CN=…, O=…`.
    pub subject: String,
    /// Its issuer, as `CN=…, O=…`.
    pub issuer: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// Seconds until it expires (negative: expired).
    pub fn expires_in(&self, now: SystemTime) -> i64 {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.not_after - now
    }

    /// The name it is shown by: its first name, else its subject.
    pub fn name(&self) -> &str {
        self.names.first().map_or(&self.subject, String::as_str)
    }
}

/// A terminating listener's TLS, ready for handshakes: built by [`load`]
/// from the configuration, shared by the listener's settings.
#[derive(Debug)]
pub struct Terminator {
    /// What it was built from (a change of it, or a reload, builds anew).
    pub config: ListenerTls,
    /// The rustls configuration every handshake uses.
    pub server: Arc<ServerConfig>,
    /// Its certificates, in configuration order (none when its certificate
    /// comes from ACME: see `acme`).
    pub certs: Vec<CertInfo>,
    /// When its certificate comes from ACME (`<tls acme>`): where.
    pub acme: Option<AcmeServing>,
}

/// A terminating listener's certificates from ACME.
#[derive(Debug)]
pub struct AcmeServing {
    /// The certificates served, in configuration order (each swapped by
    /// the ordering task).
    pub slots: Vec<Arc<AcmeSlot>>,
    /// Which slot serves which SNI (as [`ByName`] chooses among files).
    pub index: NameIndex,
    /// The configuration of `tls-alpn-01` validation handshakes (ALPN
    /// `acme-tls/1`, the validation certificate by SNI).
    pub validation: Arc<ServerConfig>,
}

impl AcmeServing {
    /// The slot whose certificate a client sending `sni` gets.
    pub fn pick(&self, sni: Option<&str>) -> &Arc<AcmeSlot> {
        &self.slots[self.index.pick(sni).min(self.slots.len() - 1)]
    }
}

impl Terminator {
    /// What its certificates say now (those from ACME once issued).
    pub fn cert_infos(&self) -> Vec<CertInfo> {
        match &self.acme {
            Some(acme) => (acme.slots.iter())
                .filter_map(|slot| slot.current().map(|i| i.info.clone()))
                .collect(),
            None => self.certs.clone(),
        }
    }

    /// The names of each of its certificates from ACME not issued yet.
    pub fn acme_pending(&self) -> Vec<Vec<String>> {
        (self.acme.iter().flat_map(|a| &a.slots))
            .filter(|slot| slot.current().is_none())
            .map(|slot| slot.names.clone())
            .collect()
    }
}

/// Reads every certificate, key and client CA file of `tls` and builds the
/// rustls configuration: the one place that reads them (`txlb check`, start,
/// reloads). A missing or unreadable file, a file without PEM of the kind
/// expected, a key that is not its certificate's, or a certificate that does
/// not parse is an error naming where the configuration names the file.
pub fn load(tls: &ListenerTls) -> Result<Terminator, TlsError> {
    load_in(tls, &AcmeCerts::default())
}

/// [`load`], a certificate from ACME served from its slot in `acme`.
pub fn load_in(tls: &ListenerTls, acme: &AcmeCerts) -> Result<Terminator, TlsError> {
    let provider = Arc::new(server_provider());
    let mut keys = Vec::with_capacity(tls.certs.len());
    let mut certs = Vec::with_capacity(tls.certs.len());
    for pair in &tls.certs {
        let (key, info) = load_pair(pair, &provider)?;
        keys.push(Arc::new(key));
        certs.push(info);
    }
    let first = tls.certs.first().map(|c| &c.written);
    let first = first.or(tls.acme.first().map(|c| &c.written));
    let at = |l: Option<&Location>| l.cloned();
    // The client CA's text and the mode: what a ticket's client identity was
    // checked against (see `ticketer`).
    let mut auth_scope: Option<Vec<u8>> = None;
    let verifier = match &tls.options.client_ca {
        None => None,
        Some(ca) => {
            let ca_at = at(first.and_then(|w| w.client_ca.as_ref()));
            let fail = |message: String| TlsError {
                at: ca_at.clone(),
                message,
            };
            let text = read_pem(ca).map_err(&fail)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&text) {
                let cert = cert.map_err(|e| fail(format!("{}: bad PEM: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| fail(format!("{}: not a CA certificate: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(fail(format!(
                    "{}: no certificate in it (expected PEM CERTIFICATE blocks)",
                    ca.display()
                )));
            }
            let mode: &[u8] = match tls.options.client_auth {
                ClientAuth::Required => b"required\n",
                ClientAuth::Optional => b"optional\n",
            };
            auth_scope = Some([mode, &text[..]].concat());
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = match tls.options.client_auth {
                ClientAuth::Required => builder,
                ClientAuth::Optional => builder.allow_unauthenticated(),
            };
            Some(
                builder
                    .build()
                    .map_err(|e| fail(format!("{}: {e}", ca.display())))?,
            )
        }
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.options.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let element = at(first.and_then(|w| w.element.as_ref()));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError {
            at: element.clone(),
            message: e.to_string(),
        })?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let (mut server, acme) = match tls.acme.is_empty() {
        true => (
            builder.with_cert_resolver(Arc::new(ByName::new(keys, &certs))),
            None,
        ),
        false => {
            let slots: Vec<Arc<AcmeSlot>> =
                tls.acme.iter().map(|cert| acme.slot(&cert.names)).collect();
            let index = NameIndex::new(tls.acme.iter().map(|cert| cert.names.as_slice()));
            let validation = ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| TlsError {
                    at: element.clone(),
                    message: e.to_string(),
                })?
                .with_no_client_auth();
            let mut validation =
                validation.with_cert_resolver(Arc::new(acme::Validation(acme.challenges.clone())));
            validation.alpn_protocols = vec![acme::ACME_TLS_ALPN.to_vec()];
            let serving = AcmeServing {
                slots: slots.clone(),
                index: index.clone(),
                validation: Arc::new(validation),
            };
            (
                builder.with_cert_resolver(Arc::new(acme::FromSlots { slots, index })),
                Some(serving),
            )
        }
    };
    server.ignore_client_order = true;
    // One ticket per handshake (rustls sends two by default): clients resume
    // from the latest (browsers, curl, OpenSSL's s_time), and each ticket is
    // an encryption and three reads of the system's randomness.
    server.send_tls13_tickets = 1;
    // TLS 1.3 connections leave rustls after the handshake (`record`): its
    // keys are extracted, its traffic secrets logged for key updates.
    server.enable_secret_extraction = true;
    server.key_log = Arc::new(record::CaptureSecrets);
    if let Some(ticketer) = ticketer(auth_scope.as_deref()) {
        server.ticketer = ticketer;
    }
    server.alpn_protocols = tls
        .options
        .alpn
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(Terminator {
        config: tls.clone(),
        server: Arc::new(server),
        certs,
        acme,
    })
}

/// The crypto of terminating listeners: *ring*'s suites, in the server's
/// order (the listener ignores the client's), AES-128-GCM first and the
/// SHA-384 suites last. TLS 1.3's mandatory suite is as safe for a session
/// and its key schedule hashes with SHA-256, which CPUs do in hardware:
/// with a client's usual order (AES-256-GCM-SHA384 first), SHA-512 rounds in
/// software were 9% of a full handshake's CPU.
fn server_provider() -> CryptoProvider {
    use rustls::CipherSuite::*;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        matches!(
            s.suite(),
            TLS13_AES_256_GCM_SHA384
                | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        )
    });
    provider
}

/// The session tickets of terminating listeners (resumption without a
/// server-side cache, and a ticket reusable as OpenSSL's are): one rotating
/// key (rustls' `Ticketer`, a new key every 6 hours) per way of checking
/// clients, so a reload that rebuilds a listener's configuration keeps its
/// clients' tickets good. rustls resumes a session with the client
/// certificate its ticket holds, without checking it again: a ticket from a
/// listener without mutual TLS, or with another CA or mode, must not open a
/// listener that requires one (nor a reload's new CA honour an old ticket).
/// So listeners without client certificates share one key, and each
/// `clientAuth` mode and client CA text (`auth_scope`) has its own. `None`
/// if it cannot be made: sessions then resume from the listener's own
/// in-memory cache only.
fn ticketer(auth_scope: Option<&[u8]>) -> Option<Arc<dyn rustls::server::ProducesTickets>> {
    type Tickets = Arc<dyn rustls::server::ProducesTickets>;
    /// Scopes kept at most: a long life of reloads changing CAs does not
    /// grow it without end (a scope dropped only costs its clients a full
    /// handshake).
    const MOST: usize = 64;
    static TICKETERS: std::sync::Mutex<Vec<(Option<[u8; 32]>, Tickets)>> =
        std::sync::Mutex::new(Vec::new());
    let scope = auth_scope.map(|text| {
        let digest = ring::digest::digest(&ring::digest::SHA256, text);
        let mut scope = [0u8; 32];
        scope.copy_from_slice(digest.as_ref());
        scope
    });
    let mut ticketers = TICKETERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, ticketer)) = ticketers.iter().find(|(s, _)| *s == scope) {
        return Some(ticketer.clone());
    }
    match rustls::crypto::ring::Ticketer::new() {
        Ok(ticketer) => {
            if ticketers.len() >= MOST {
                // The oldest scope with client certificates goes.
                if let Some(at) = ticketers.iter().position(|(s, _)| s.is_some()) {
                    ticketers.remove(at);
                }
            }
            ticketers.push((scope, ticketer.clone()));
            Some(ticketer)
        }
        Err(error) => {
            tracing::warn!(%error, "no session tickets: TLS sessions resume from the cache only");
            None
        }
    }
}

/// One `<tls cert key>`: the chain, the key, and that they belong together.
pub(crate) fn load_pair(
    pair: &TlsCert,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, CertInfo), TlsError> {
    let cert_err = |message: String| TlsError {
        at: pair.written.cert.clone(),
        message,
    };
    let key_err = |message: String| TlsError {
        at: pair.written.key.clone(),
        message,
    };
    let cert_text = read_pem(&pair.cert).map_err(cert_err)?;
    let key_text = read_pem(&pair.key).map_err(key_err)?;
    parse_pair(&pair.cert, &cert_text, &pair.key, &key_text, provider).map_err(
        |(on_key, message)| match on_key {
            true => key_err(message),
            false => cert_err(message),
        },
    )
}

/// Checks a certificate chain and its key given as PEM text (a certificate
/// replaced through the API), as [`load`] checks files: what the leaf says,
/// or why they do not go together.
pub fn check_pem_pair(cert: &[u8], key: &[u8]) -> Result<CertInfo, String> {
    let provider = rustls::crypto::ring::default_provider();
    if cert.len() as u64 > MAX_PEM_BYTES || key.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "larger than {MAX_PEM_BYTES} bytes (expected a PEM file)"
        ));
    }
    parse_pair(Path::new("cert"), cert, Path::new("key"), key, &provider)
        .map(|(_, info)| info)
        .map_err(|(_, message)| message)
}

/// A chain and its key given as PEM text, ready to serve: what a certificate
/// from ACME stored at `file` is read into.
pub(crate) fn certified_from_pem(
    file: &Path,
    cert: &[u8],
    key: &[u8],
) -> Result<(CertifiedKey, CertInfo), String> {
    let provider = rustls::crypto::ring::default_provider();
    parse_pair(file, cert, file, key, &provider).map_err(|(_, message)| message)
}

/// A chain and its key from their PEM text (`cert_file`, `key_file` name
/// them in messages). The error says whether the key is to blame.
fn parse_pair(
    cert_file: &Path,
    text: &[u8],
    key_file: &Path,
    key_text: &[u8],
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, CertInfo), (bool, String)> {
    let cert_err = |message: String| (false, message);
    let key_err = |message: String| (true, message);
    let cert_path = cert_file;
    let cert_file = cert_file.display();
    let key_file = key_file.display();
    let chain = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("{cert_file}: bad PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(cert_err(format!(
            "{cert_file}: no certificate in it (expected PEM CERTIFICATE blocks)"
        )));
    };
    let info = describe(cert_path, leaf).map_err(cert_err)?;
    let key = PrivateKeyDer::from_pem_slice(key_text).map_err(|e| {
        key_err(format!(
            "{key_file}: no private key in it (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block): {e}"
        ))
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_err(format!("{key_file}: unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(key_err(format!(
                "{key_file} is not the private key of {cert_file} (expected the key the certificate was issued for)"
            )));
        }
    }
    Ok((certified, info))
}

/// A PEM file's bytes: a regular file of at most [`MAX_PEM_BYTES`].
pub(crate) fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{shown} is larger than {MAX_PEM_BYTES} bytes (expected a PEM file)"
        ));
    }
    Ok(bytes)
}

/// What a leaf certificate says (names, subject, issuer, expiry).
pub(crate) fn describe(file: &Path, der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("{}: not an X.509 certificate: {e}", file.display()))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(CertInfo {
        file: file.to_path_buf(),
        names,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The subject of a client's certificate (`CN=…, O=…`) and its first
/// common name, if the certificate parses.
fn identity_of(der: &CertificateDer<'_>) -> Option<(String, Option<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some((cert.subject().to_string(), cn))
}

/// Chooses a certificate by the client's SNI: an exact name, else a
/// wildcard `*.rest` covering its first label (as certificates mean it: one
/// label); no SNI or no match: the first certificate. Earlier certificates
/// win a name two carry.
#[derive(Debug, Clone, Default)]
pub struct NameIndex {
    exact: HashMap<String, usize>,
    /// By the part after `*.`.
    wildcard: HashMap<String, usize>,
}

impl NameIndex {
    /// The index of the names of each certificate, in order.
    pub fn new<'n>(certs: impl Iterator<Item = &'n [String]>) -> NameIndex {
        let mut index = NameIndex::default();
        for (i, names) in certs.enumerate() {
            for name in names {
                match name.strip_prefix("*.") {
                    Some(rest) => index.wildcard.entry(rest.to_string()).or_insert(i),
                    None => index.exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        index
    }

    /// The index of the certificate for `sni`.
    pub fn pick(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni else {
            return 0;
        };
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&sni) {
            return i;
        }
        sni.split_once('.')
            .and_then(|(_, rest)| self.wildcard.get(rest).copied())
            .unwrap_or(0)
    }
}

/// Serves a listener's certificate files, chosen by SNI ([`NameIndex`]).
#[derive(Debug)]
pub struct ByName {
    keys: Vec<Arc<CertifiedKey>>,
    index: NameIndex,
}

impl ByName {
    fn new(keys: Vec<Arc<CertifiedKey>>, certs: &[CertInfo]) -> ByName {
        ByName {
            keys,
            index: NameIndex::new(certs.iter().map(|c| c.names.as_slice())),
        }
    }

    /// The index of the certificate for `sni`.
    pub fn pick(&self, sni: Option<&str>) -> usize {
        self.index.pick(sni)
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys.get(self.pick(hello.server_name())).cloned()
    }
}

/// What a finished handshake told, for the access log and the connection
/// list (their fields `tls_version`, `cipher`, `tls_alpn`, `client_subject`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    /// `1.2` or `1.3`.
    #[serde(rename = "tls_version")]
    pub version: &'static str,
    /// The cipher suite (`TLS13_AES_128_GCM_SHA256`).
    pub cipher: String,
    /// The ALPN protocol agreed on, if any.
    #[serde(rename = "tls_alpn", skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// The subject of the client's certificate (mutual TLS), if it showed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_subject: Option<String>,
    /// That certificate's common name, for the PROXY v2 header's TLV.
    #[serde(skip)]
    pub client_cn: Option<String>,
    /// The session was resumed (a ticket): a client certificate was shown
    /// when it began, not on this connection.
    #[serde(rename = "tls_resumed", skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

impl Session {
    /// What `conn` (a finished handshake) tells.
    pub fn of(conn: &rustls::ServerConnection) -> Session {
        let (client_subject, client_cn) = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(identity_of)
            .unzip();
        Session {
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
                _ => "other",
            },
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            client_subject,
            client_cn: client_cn.flatten(),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }
}

/// Why a handshake failed, as counted and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// No handshake within the listener's `handshakeTimeout`.
    Timeout,
    /// The first bytes were not a TLS handshake (plain text, garbage).
    NotTls,
    /// The client closed before the handshake finished.
    Closed,
    /// No version, cipher or ALPN protocol in common.
    Incompatible,
    /// A client certificate was required and none was shown.
    NoClientCert,
    /// The client's certificate did not verify.
    BadClientCert,
    /// The client refused the handshake (an alert: our certificate, say).
    ClientAlert,
    /// Any other protocol error.
    Protocol,
    /// The listener's certificate comes from ACME and none was issued yet.
    NoCertificate,
    /// Not a failure: an ACME server's `tls-alpn-01` validation, answered
    /// and closed (neither counted nor logged: not in [`HandshakeFailure::ALL`]).
    AcmeValidation,
}

impl HandshakeFailure {
    /// Every kind, in counter order.
    pub const ALL: [HandshakeFailure; 9] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::NotTls,
        HandshakeFailure::Closed,
        HandshakeFailure::Incompatible,
        HandshakeFailure::NoClientCert,
        HandshakeFailure::BadClientCert,
        HandshakeFailure::ClientAlert,
        HandshakeFailure::Protocol,
        HandshakeFailure::NoCertificate,
    ];

    /// As counted in `/metrics` (`reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::NoClientCert => "no_client_cert",
            HandshakeFailure::BadClientCert => "bad_client_cert",
            HandshakeFailure::ClientAlert => "client_alert",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::AcmeValidation => "acme_validation",
        }
    }

    /// The kind of a handshake's I/O error (tokio-rustls wraps rustls's
    /// errors in `InvalidData`).
    pub fn of(error: &std::io::Error) -> HandshakeFailure {
        use rustls::Error as E;
        use std::io::ErrorKind;
        if let Some(inner) = error.get_ref().and_then(|e| e.downcast_ref::<E>()) {
            return match inner {
                E::InvalidMessage(_) | E::InappropriateHandshakeMessage { .. } => {
                    HandshakeFailure::NotTls
                }
                E::InappropriateMessage { .. } => HandshakeFailure::NotTls,
                E::NoCertificatesPresented => HandshakeFailure::NoClientCert,
                E::InvalidCertificate(_) => HandshakeFailure::BadClientCert,
                E::PeerIncompatible(_) | E::NoApplicationProtocol => HandshakeFailure::Incompatible,
                E::AlertReceived(_) => HandshakeFailure::ClientAlert,
                _ => HandshakeFailure::Protocol,
            };
        }
        match error.kind() {
            ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => HandshakeFailure::Closed,
            ErrorKind::InvalidData => HandshakeFailure::NotTls,
            _ => HandshakeFailure::Protocol,
        }
    }
}

/// A terminating listener's handshake counters: kept across reloads (the
/// listener's settings carry them), read by `/metrics`.
#[derive(Debug, Default)]
pub struct TlsCounters {
    /// Completed handshakes with TLS 1.2.
    pub tls12: AtomicU64,
    /// Completed handshakes with TLS 1.3.
    pub tls13: AtomicU64,
    /// Failed handshakes, by [`HandshakeFailure::ALL`] order.
    pub failed: [AtomicU64; HandshakeFailure::ALL.len()],
}

impl TlsCounters {
    /// Counts a completed handshake.
    pub fn completed(&self, version: &str) {
        match version {
            "1.2" => &self.tls12,
            _ => &self.tls13,
        }
        .fetch_add(1, Relaxed);
    }

    /// Counts a failed handshake.
    pub fn failed(&self, why: HandshakeFailure) {
        if let Some(counter) = self.failed.get(why as usize) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Failed handshakes of kind `why`.
    pub fn failures(&self, why: HandshakeFailure) -> u64 {
        self.failed.get(why as usize).map_or(0, |c| c.load(Relaxed))
    }
}

/// Logs a warning for each certificate of `certs` (served on `listener`)
/// that expires within [`EXPIRY_WARNING`], at most once a day per
/// certificate file: the start, each reload and a daily look call it.
pub fn warn_expiring(listener: &str, certs: &[CertInfo], now: SystemTime) {
    static WARNED: Mutex<Option<HashMap<PathBuf, i64>>> = Mutex::new(None);
    let day = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64 / 86_400;
    for cert in certs {
        let left = cert.expires_in(now);
        if left > EXPIRY_WARNING.as_secs() as i64 {
            continue;
        }
        let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
        let warned = warned.get_or_insert_with(HashMap::new);
        if warned.get(&cert.file) == Some(&day) {
            continue;
        }
        warned.insert(cert.file.clone(), day);
        if left <= 0 {
            tracing::warn!(listener, name = cert.name(), file = %cert.file.display(), expired_seconds_ago = -left, "TLS certificate expired");
        } else {
            tracing::warn!(listener, name = cert.name(), file = %cert.file.display(), days_left = left / 86_400, "TLS certificate expires within 14 days");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener's TLS of self-signed certificates for each list of names,
    /// written into `dir`.
    fn listener_tls(dir: &Path, names: &[&[&str]]) -> ListenerTls {
        let certs = names
            .iter()
            .enumerate()
            .map(|(i, names)| {
                let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                let key = rcgen::KeyPair::generate().unwrap();
                let cert = rcgen::CertificateParams::new(names)
                    .unwrap()
                    .self_signed(&key)
                    .unwrap();
                let (c, k) = (dir.join(format!("{i}.pem")), dir.join(format!("{i}.key")));
                std::fs::write(&c, cert.pem()).unwrap();
                std::fs::write(&k, key.serialize_pem()).unwrap();
                TlsCert::new(c, k)
            })
            .collect();
        ListenerTls {
            certs,
            ..ListenerTls::default()
        }
    }

    #[test]
    fn sni_picks_exact_then_one_label_wildcards_else_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let tls = listener_tls(
            dir.path(),
            &[
                &["first.example.com"],
                &["*.example.org", "exact.example.net"],
                &["a.example.org", "exact.example.net"],
            ],
        );
        let loaded = load(&tls).unwrap();
        assert_eq!(loaded.certs.len(), 3);
        let by_name = ByName::new(Vec::new(), &loaded.certs);
        for (sni, want) in [
            (None, 0),
            (Some("first.example.com"), 0),
            (Some("FIRST.example.com."), 0),
            (Some("b.example.org"), 1),
            // An exact name beats a wildcard, whatever their order.
            (Some("a.example.org"), 2),
            // The first certificate that names it.
            (Some("exact.example.net"), 1),
            (Some("x.y.example.org"), 0),
            (Some("example.org"), 0),
            (Some("other.test"), 0),
        ] {
            assert_eq!(by_name.pick(sni), want, "{sni:?}");
        }
        assert_eq!(
            loaded.certs[1].names,
            ["*.example.org", "exact.example.net"]
        );
        assert!(loaded.certs[0].expires_in(SystemTime::now()) > 0);
    }

    #[test]
    fn files_that_do_not_load_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut tls = listener_tls(dir.path(), &[&["a.test"], &["b.test"]]);
        let err = |tls: &ListenerTls| load(tls).unwrap_err().message;
        let mut swapped = tls.clone();
        swapped.certs[0].key = tls.certs[1].key.clone();
        assert!(err(&swapped).contains("is not the private key of"));
        let mut missing = tls.clone();
        missing.certs[1].cert = dir.path().join("none.pem");
        assert!(err(&missing).contains("cannot read"));
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let mut empty = tls.clone();
        empty.certs[0].cert = dir.path().join("empty.pem");
        assert!(err(&empty).contains("no certificate in it"));
        tls.options.client_ca = Some(dir.path().join("0.key"));
        assert!(err(&tls).contains("no certificate in it"));
        let mut dir_as_file = listener_tls(dir.path(), &[&["c.test"]]);
        dir_as_file.certs[0].key = dir.path().to_path_buf();
        assert!(err(&dir_as_file).contains("not a regular file"));
    }
}
