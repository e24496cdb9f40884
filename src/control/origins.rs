//! The TLS of every originating group (`tls::origin::load`): read before a
//! change is applied, so a file that does not load refuses the change and
//! the running ones stay; kept across changes that leave a group's TLS
//! settings alone, re-read on every reload.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::ControlError;
use crate::config::{Config, TlsVerify};
use crate::tls::{OriginTls, Originator};

/// The TLS of each originating group, by (service, group).
pub(super) type Originators = HashMap<(String, String), Arc<Originator>>;

/// Builds the TLS of every group of `next` that originates (the group's
/// `tls`, or one host's), keeping a running one whose settings did not
/// change unless `reread`. The first that does not load refuses the change,
/// with where its file is named.
pub(super) fn originators(
    running: &Originators,
    next: &Config,
    reread: bool,
) -> Result<Originators, ControlError> {
    let mut out = Originators::new();
    let mut system = crate::tls::origin::SystemRoots::default();
    for service in &next.services {
        for group in &service.groups {
            let originates =
                group.options.tls || group.hosts.iter().any(|h| h.options.tls == Some(true));
            if !originates {
                continue;
            }
            let fail = |e: crate::tls::TlsError| {
                let at = e.at.map(|at| format!("{at}: ")).unwrap_or_default();
                ControlError::Invalid(format!(
                    "{at}service {:?}, group {:?}: {}",
                    service.name, group.name, e.message
                ))
            };
            let tls = OriginTls::of(&group.options).map_err(fail)?;
            let key = (service.name.clone(), group.name.clone());
            let kept = running
                .get(&key)
                .filter(|o| !reread && o.config == tls)
                .cloned();
            let originator = match kept {
                Some(kept) => kept,
                None => {
                    let mut loaded = crate::tls::origin::load(&tls, &mut system).map_err(fail)?;
                    if let Some(running) = running.get(&key) {
                        loaded.counters = running.counters.clone();
                    }
                    if tls.verify == TlsVerify::None {
                        tracing::warn!(
                            service = %service.name,
                            group = %group.name,
                            "tlsVerify=\"none\": the hosts' certificates are not verified (anyone on the path can pose as a host)"
                        );
                    }
                    if let Some(cert) = &loaded.cert {
                        crate::tls::warn_expiring(
                            &format!("{}/{}", service.name, group.name),
                            std::slice::from_ref(cert),
                            std::time::SystemTime::now(),
                        );
                    }
                    Arc::new(loaded)
                }
            };
            out.insert(key, originator);
        }
    }
    Ok(out)
}
