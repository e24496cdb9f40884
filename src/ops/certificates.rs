//! The certificates a running balancer holds: each terminating listener's
//! (served to clients) and each originating group's client certificate
//! (shown to its hosts). One read for the JSON API
//! (`GET /api/v1/certificates`) and the console (`show certs`); and the
//! replacement of a listener's certificate from PEM text
//! ([`ReplaceCertificate`], JSON API only: a PEM body fits neither the
//! console's words nor the legacy API's parameters).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::OpError;
use crate::config::ListenAddr;
use crate::control::{Command, ControlError};
use crate::{BalancerHandle, CertificateStats};

/// One certificate, where it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateEntry {
    /// The service it belongs to.
    pub service: String,
    /// `server` (a listener's, served to clients) or `client` (a group's,
    /// shown to its hosts).
    pub role: &'static str,
    /// The listener serving it, as configured (`server` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// The group showing it (`client` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Names, issuer, file and expiry.
    #[serde(flatten)]
    pub certificate: CertificateStats,
}

/// Every certificate in use: listeners' in listener order (each listener's
/// in configuration order), then groups' client certificates.
pub fn certificates(handle: &BalancerHandle) -> Vec<CertificateEntry> {
    let mut out: Vec<CertificateEntry> = handle
        .listeners()
        .into_iter()
        .flat_map(|l| {
            let (service, listener) = (l.service, l.configured);
            l.tls
                .into_iter()
                .flat_map(|t| t.certificates)
                .map(move |certificate| CertificateEntry {
                    service: service.clone(),
                    role: "server",
                    listener: Some(listener.clone()),
                    group: None,
                    certificate,
                })
        })
        .collect();
    out.extend(
        handle
            .client_certificates()
            .into_iter()
            .map(|(service, group, certificate)| CertificateEntry {
                service,
                role: "client",
                listener: None,
                group: Some(group),
                certificate,
            }),
    );
    out
}

/// Replace a terminating listener's certificate with one given as PEM text
/// (the JSON API's `PUT …/listeners/{listen}/certificates/{index}`).
///
/// The pair is checked first as `tls::load` checks files (parses, the key is
/// the certificate's); then it is written beside the certificate it
/// replaces, as `NAME.UNIXTIME.pem` and `NAME.UNIXTIME.key` (created anew,
/// never over a file; the key readable by txlb's user alone), and the
/// listener is pointed at them by a [`Command::SetListenerCert`] (which
/// reads them once more, as every change of a listener's TLS does). The
/// running configuration names the new files (`running.xml`, `config save`);
/// a reload of an unsaved file goes back to the old ones. Refused in fleet
/// mode: the other instances would not have the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceCertificate {
    /// Service name.
    pub service: String,
    /// The listener, as configured.
    pub listen: ListenAddr,
    /// Which of its certificates (configuration order, from 0).
    pub index: usize,
    /// The certificate chain, PEM.
    pub cert: String,
    /// Its private key, PEM.
    pub key: String,
}

impl ReplaceCertificate {
    /// Checks, writes and applies it; the answer names the new certificate.
    pub async fn run(self, h: &BalancerHandle) -> Result<CertificateEntry, OpError> {
        let config = h.config();
        if config.cluster.is_some() {
            return Err(OpError::Failed(
                "replacing a certificate through the API is not offered in fleet mode (the other instances would not have its files): change the files and reload".into(),
            ));
        }
        let bad = |name: &'static str, reason: String| OpError::Bad {
            name,
            label: name,
            reason,
        };
        crate::tls::check_pem_pair(self.cert.as_bytes(), self.key.as_bytes())
            .map_err(|why| bad("cert", why))?;
        let current = config
            .services
            .iter()
            .find(|s| s.name == self.service)
            .ok_or_else(|| OpError::Refused(ControlError::UnknownService(self.service.clone())))?
            .listeners
            .iter()
            .find(|l| l.addr == self.listen)
            .ok_or_else(|| {
                OpError::Refused(ControlError::UnknownListener {
                    service: self.service.clone(),
                    listen: self.listen.to_string(),
                })
            })?
            .tls
            .as_ref()
            .and_then(|tls| tls.certs.get(self.index))
            .ok_or_else(|| {
                OpError::NotFound(format!(
                    "service {:?}, listener {}: no certificate number {} (a terminating listener's, counted from 0)",
                    self.service, self.listen, self.index
                ))
            })?
            .clone();
        let (cert, key) = write_pair(&current.cert, &self.cert, &self.key)?;
        let applied = h
            .apply(Command::SetListenerCert {
                service: self.service.clone(),
                listen: self.listen.clone(),
                index: self.index,
                cert: cert.clone(),
                key: key.clone(),
            })
            .await;
        if let Err(error) = applied {
            let _ = std::fs::remove_file(&cert);
            let _ = std::fs::remove_file(&key);
            return Err(error.into());
        }
        let listen = self.listen.to_string();
        certificates(h)
            .into_iter()
            .filter(|c| c.service == self.service && c.listener.as_deref() == Some(&listen))
            .nth(self.index)
            .ok_or(OpError::Internal("the new certificate is not listed"))
    }
}

/// Writes `cert` and `key` as new files beside `beside` (`NAME.UNIXTIME.pem`,
/// `NAME.UNIXTIME.key`, a counter added if taken): created exclusively, the
/// key with mode 0600.
fn write_pair(beside: &Path, cert: &str, key: &str) -> Result<(PathBuf, PathBuf), OpError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = beside.parent().unwrap_or(Path::new("."));
    let stem = beside
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("certificate");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let create = |path: &Path, text: &str, mode: u32| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    };
    for attempt in 0..100u32 {
        let name = match attempt {
            0 => format!("{stem}.{now}"),
            n => format!("{stem}.{now}-{n}"),
        };
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        if c.exists() || k.exists() {
            continue;
        }
        let written = create(&k, key, 0o600).and_then(|()| create(&c, cert, 0o644));
        return match written {
            Ok(()) => Ok((c, k)),
            Err(error) => {
                let _ = std::fs::remove_file(&k);
                tracing::warn!(dir = %dir.display(), %error, "cannot write a replaced certificate");
                Err(OpError::Failed(format!(
                    "cannot write the new certificate beside {}: {}",
                    beside.display(),
                    error.kind()
                )))
            }
        };
    }
    Err(OpError::Failed(format!(
        "cannot write the new certificate beside {}: names taken",
        beside.display()
    )))
}
