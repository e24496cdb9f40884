//! TLS origination: an originating group's client settings (how its hosts'
//! certificates are verified, its client certificate, ALPN), read once per
//! start and reload by [`load`], with the same file loader as termination.
//!
//! The data path holds an [`Originator`] (an `Arc` in the group's snapshot)
//! and gives each connect the host's server name; a reload builds a new one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{CertInfo, TlsError, load_pair, read_pem};
use crate::config::{GroupOptions, NamedFile, TlsCert, TlsVerify, WrittenAt};

/// What an originating group's TLS is built from (its `tls…` settings but
/// the per-host server name): a change of it, or a reload, builds anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTls {
    /// How the hosts' certificates are verified.
    pub verify: TlsVerify,
    /// The client certificate and its key, if any.
    pub cert: Option<(NamedFile, NamedFile)>,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
}

impl OriginTls {
    /// The TLS settings of a group's `options`. A `tlsCert` without
    /// `tlsKey` (or the reverse) is an error naming where it was written.
    pub fn of(options: &GroupOptions) -> Result<OriginTls, TlsError> {
        let cert = match (&options.tls_cert, &options.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => {
                return Err(TlsError {
                    at: one.at.clone(),
                    message: "tlsCert and tlsKey go together (expected both: a client certificate and its private key)".into(),
                });
            }
        };
        Ok(OriginTls {
            verify: options.tls_verify.clone(),
            cert,
            alpn: options.tls_alpn.clone(),
        })
    }
}

/// An originating group's TLS, ready for handshakes with its hosts.
#[derive(Debug)]
pub struct Originator {
    /// What it was built from.
    pub config: OriginTls,
    /// The rustls settings every connect (and every check) uses.
    pub client: Arc<ClientConfig>,
    /// The client certificate, if any.
    pub cert: Option<CertInfo>,
    /// How many roots verify the hosts' certificates (0 with `none`).
    pub roots: usize,
    /// The group's handshakes with its hosts: carried from the group's
    /// previous `Originator` when a change or reload builds a new one.
    pub counters: Arc<OriginCounters>,
}

/// How a TLS handshake with a host ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginResult {
    /// Completed: the host's certificate verified.
    Ok,
    /// The host's certificate did not verify (unknown issuer, wrong name,
    /// expired…).
    VerifyFailed,
    /// Any other failure: the host closed, refused our client certificate,
    /// spoke no TLS, had no version or cipher in common.
    HandshakeError,
    /// Not done within what was left of the connect timeout.
    Timeout,
}

impl OriginResult {
    /// Every result, in counter order.
    pub const ALL: [OriginResult; 4] = [
        OriginResult::Ok,
        OriginResult::VerifyFailed,
        OriginResult::HandshakeError,
        OriginResult::Timeout,
    ];

    /// As counted in `/metrics` (`result`) and the JSON stats.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginResult::Ok => "ok",
            OriginResult::VerifyFailed => "verify_failed",
            OriginResult::HandshakeError => "handshake_error",
            OriginResult::Timeout => "timeout",
        }
    }

    /// The result of a handshake that failed with `error` (tokio-rustls
    /// wraps rustls's errors in an I/O error).
    pub fn of(error: &std::io::Error) -> OriginResult {
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        match inner {
            Some(rustls::Error::InvalidCertificate(_)) => OriginResult::VerifyFailed,
            _ => OriginResult::HandshakeError,
        }
    }
}

/// Upper bounds (seconds) of the buckets of the histogram of completed
/// handshakes with hosts (a handshake on a LAN takes a millisecond or two;
/// one across the world, a few hundred).
pub const HANDSHAKE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// An originating group's handshakes with its hosts, by result, and how
/// long the completed ones took. Written by the connections of the group
/// (atomics: no lock on the data path), read by the stats and `/metrics`.
#[derive(Debug, Default)]
pub struct OriginCounters {
    /// Handshakes by [`OriginResult::ALL`] order.
    results: [AtomicU64; OriginResult::ALL.len()],
    /// Completed handshakes per [`HANDSHAKE_BUCKETS`] bucket (the last one
    /// counts everything slower).
    buckets: [AtomicU64; HANDSHAKE_BUCKETS.len() + 1],
    /// Microseconds the completed handshakes took, summed.
    micros: AtomicU64,
}

impl OriginCounters {
    /// Counts a handshake that ended with `result` after `took`.
    pub fn count(&self, result: OriginResult, took: Duration) {
        self.results[result as usize].fetch_add(1, Relaxed);
        if result == OriginResult::Ok {
            let seconds = took.as_secs_f64();
            let bucket = HANDSHAKE_BUCKETS
                .iter()
                .position(|&le| seconds <= le)
                .unwrap_or(HANDSHAKE_BUCKETS.len());
            self.buckets[bucket].fetch_add(1, Relaxed);
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            self.micros.fetch_add(micros, Relaxed);
        }
    }

    /// Handshakes that ended with `result`.
    pub fn handshakes(&self, result: OriginResult) -> u64 {
        self.results[result as usize].load(Relaxed)
    }

    /// Completed handshakes per [`HANDSHAKE_BUCKETS`] bucket, and one more
    /// for the slower ones (not cumulative).
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Relaxed)).collect()
    }

    /// Microseconds the completed handshakes took, summed.
    pub fn micros(&self) -> u64 {
        self.micros.load(Relaxed)
    }
}

/// The system's trusted roots, read at most once per [`SystemRoots`]: one
/// per start or reload, however many groups verify against them (reading the
/// store takes tens of milliseconds).
#[derive(Debug, Default)]
pub struct SystemRoots(Option<Arc<RootCertStore>>);

/// Builds an originating group's TLS: reads the CA file or the system's
/// store (into `system`, once for every group of a start or reload), and
/// the client certificate with its key (as termination reads its own:
/// [`load_pair`]). An error names where the configuration names the file
/// that does not load.
pub fn load(tls: &OriginTls, system: &mut SystemRoots) -> Result<Originator, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            at: None,
            message: e.to_string(),
        })?;
    let (builder, roots) = match &tls.verify {
        TlsVerify::None => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone()))),
            0,
        ),
        verify => {
            let roots = match (verify, &system.0) {
                (TlsVerify::System, Some(roots)) => roots.clone(),
                (TlsVerify::System, None) => {
                    let roots = Arc::new(self::roots(verify)?);
                    system.0 = Some(roots.clone());
                    roots
                }
                _ => Arc::new(self::roots(verify)?),
            };
            let count = roots.len();
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| TlsError {
                    at: None,
                    message: e.to_string(),
                })?;
            (builder.with_webpki_verifier(verifier), count)
        }
    };
    let (mut client, cert) = match &tls.cert {
        None => (builder.with_no_client_auth(), None),
        Some((cert, key)) => {
            let pair = TlsCert {
                cert: cert.path.clone(),
                key: key.path.clone(),
                written: WrittenAt {
                    element: None,
                    cert: cert.at.clone(),
                    key: key.at.clone(),
                    client_ca: None,
                },
            };
            let (certified, info) = load_pair(&pair, &provider)?;
            let resolver = OneCert(Arc::new(certified));
            (
                builder.with_client_cert_resolver(Arc::new(resolver)),
                Some(info),
            )
        }
    };
    client.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Originator {
        config: tls.clone(),
        client: Arc::new(client),
        cert,
        roots,
        counters: Arc::default(),
    })
}

/// The trusted roots of `system` or a CA file.
fn roots(verify: &TlsVerify) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match verify {
        TlsVerify::None => {}
        TlsVerify::System => {
            // The system's own store (Debian: /etc/ssl/certs, what
            // ca-certificates and the administrator keep up to date;
            // SSL_CERT_FILE and SSL_CERT_DIR are honoured), not a copy of
            // Mozilla's list built into the binary.
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(TlsError {
                    at: None,
                    message: format!(
                        "tlsVerify=\"system\": no trusted root certificate in the system's store{why} (expected the ca-certificates package, or tlsVerify=\"CA-FILE\")"
                    ),
                });
            }
        }
        TlsVerify::Ca(file) => {
            let fail = |message: String| TlsError {
                at: file.at.clone(),
                message,
            };
            let shown = file.path.display();
            let text = read_pem(&file.path).map_err(&fail)?;
            for cert in CertificateDer::pem_slice_iter(&text) {
                let cert = cert.map_err(|e| fail(format!("{shown}: bad PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| fail(format!("{shown}: not a CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(fail(format!(
                    "{shown}: no certificate in it (expected PEM CERTIFICATE blocks)"
                )));
            }
        }
    }
    Ok(roots)
}

/// The server name a host's certificate is checked against: `sni`, else
/// the host's name in `ip`, else its IP.
pub fn server_name(sni: Option<&str>, host: &str) -> ServerName<'static> {
    let name = sni.unwrap_or(host).trim_end_matches('.');
    ServerName::try_from(name.to_string()).unwrap_or_else(|_| {
        // Not a DNS name nor an IP (an IPv6 literal in brackets): its IP.
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<std::net::IpAddr>()
            .map(|ip| ServerName::IpAddress(ip.into()))
            .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()))
    })
}

/// The one client certificate of a group, shown whatever the host asks.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OneCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Takes any certificate, checking only that the handshake is signed by its
/// key: `tlsVerify="none"`, and the checks of groups that do not originate
/// (a `type="tls"` check asks whether the host answers).
#[derive(Debug)]
pub struct AnyCertificate(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
