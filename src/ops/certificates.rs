//! The certificates a running balancer holds: each terminating listener's
//! (served to clients) and each originating group's client certificate
//! (shown to its hosts). One read for the JSON API
//! (`GET /api/v1/certificates`) and the console (`show certs`).

use serde::Serialize;

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
