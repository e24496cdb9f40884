//! Certificates from ACME as the data path sees them: each `<tls acme>`'s
//! certificate in a slot the ordering task fills and swaps ([`AcmeSlot`]),
//! and the challenges being answered ([`Challenges`]): `tls-alpn-01`
//! validation certificates (RFC 8737) chosen by SNI, `http-01` key
//! authorizations by token. The ordering itself (control plane, instant-acme)
//! is in `control/acme.rs`; here the handshake and the http-01 answer only
//! read, lock-free.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::CertInfo;

/// The ALPN protocol of `tls-alpn-01` validations (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of `http-01` validations (RFC 8555 §8.3).
pub const HTTP_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// A certificate issued by ACME, ready to serve.
#[derive(Debug)]
pub struct Issued {
    /// The chain and its signing key.
    pub key: Arc<CertifiedKey>,
    /// What the leaf says (names, issuer, expiry; `file` is where it is
    /// stored).
    pub info: CertInfo,
}

/// The certificate of one set of names: empty until one is issued or read
/// from storage. Written by the ordering task, read by every handshake of
/// the listeners that serve it (an `ArcSwapOption`: a renewal swaps it
/// without a lock, and open connections keep the one they started with).
#[derive(Debug)]
pub struct AcmeSlot {
    /// The names, sorted: what identifies the certificate.
    pub names: Vec<String>,
    current: ArcSwapOption<Issued>,
}

impl AcmeSlot {
    /// The certificate now served, if there is one yet.
    pub fn current(&self) -> Option<Arc<Issued>> {
        self.current.load_full()
    }

    /// Serves `issued` from now on (new handshakes).
    pub fn install(&self, issued: Issued) {
        self.current.store(Some(Arc::new(issued)));
    }
}

/// The challenges being answered: written by the ordering task for the time
/// of an order, read by listeners.
#[derive(Debug, Default)]
pub struct Challenges {
    /// `http-01`: key authorization by token.
    http: ArcSwap<HashMap<String, String>>,
    /// `tls-alpn-01`: validation certificate by name (lower case).
    tls_alpn: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The key authorization for `token` (`http-01`), if it is being
    /// answered.
    pub fn http(&self, token: &str) -> Option<String> {
        self.http.load().get(token).cloned()
    }

    /// Whether any `http-01` challenge is being answered.
    pub fn answers_http(&self) -> bool {
        !self.http.load().is_empty()
    }

    /// Answers `token` with `key_authorization` until [`Challenges::forget_http`].
    pub fn answer_http(&self, token: &str, key_authorization: &str) {
        self.http.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(token.to_string(), key_authorization.to_string());
            map
        });
    }

    /// Stops answering `token`.
    pub fn forget_http(&self, token: &str) {
        self.http.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(token);
            map
        });
    }

    /// Whether `tls-alpn-01` validations of `name` are answered.
    #[cfg(test)]
    pub fn answers_tls_alpn(&self, name: &str) -> bool {
        self.tls_alpn
            .load()
            .contains_key(&name.to_ascii_lowercase())
    }

    /// Shows `key` to `tls-alpn-01` validations of `name`.
    pub fn answer_tls_alpn(&self, name: &str, key: Arc<CertifiedKey>) {
        self.tls_alpn.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(name.to_ascii_lowercase(), key.clone());
            map
        });
    }

    /// Stops answering `tls-alpn-01` validations of `name`.
    pub fn forget_tls_alpn(&self, name: &str) {
        self.tls_alpn.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(&name.to_ascii_lowercase());
            map
        });
    }
}

/// Every certificate from ACME of one balancer, and its challenges: shared
/// by the controller (which gives listeners their slot), the ordering task
/// and the listeners.
#[derive(Debug, Default)]
pub struct AcmeCerts {
    /// By sorted names. Touched by the control plane only (building a
    /// listener's TLS, the ordering task), never by a connection.
    slots: Mutex<HashMap<Vec<String>, Arc<AcmeSlot>>>,
    /// The challenges being answered.
    pub challenges: Arc<Challenges>,
    /// Woken when the running configuration changes (new names to order).
    pub(crate) changed: tokio::sync::Notify,
}

impl AcmeCerts {
    /// The slot of the certificate for `names` (made empty if new).
    pub fn slot(&self, names: &[String]) -> Arc<AcmeSlot> {
        let mut key = names.to_vec();
        key.sort();
        key.dedup();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(AcmeSlot {
                    names: key,
                    current: ArcSwapOption::empty(),
                })
            })
            .clone()
    }

    /// Forgets the slots neither `in_use` (sorted names) nor any listener
    /// uses: a change may have given a listener its slot before the
    /// configuration naming it is published.
    pub(crate) fn retain(&self, in_use: &[Vec<String>]) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|names, slot| in_use.contains(names) || Arc::strong_count(slot) > 1);
    }
}

/// Serves a listener's certificates from ACME, chosen by SNI; none until
/// the one chosen is issued (the handshake is refused before it gets here,
/// with a log line).
#[derive(Debug)]
pub(crate) struct FromSlots {
    pub slots: Vec<Arc<AcmeSlot>>,
    pub index: super::NameIndex,
}

impl ResolvesServerCert for FromSlots {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let slot = self.slots.get(self.index.pick(hello.server_name()))?;
        slot.current().map(|issued| issued.key.clone())
    }
}

/// Serves `tls-alpn-01` validations: the validation certificate of the
/// name the validator asks for (its SNI), if one is being answered.
#[derive(Debug)]
pub(crate) struct Validation(pub Arc<Challenges>);

impl ResolvesServerCert for Validation {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.0.tls_alpn.load().get(&name).cloned()
    }
}

/// The `tls-alpn-01` validation certificate of `name` (RFC 8737 §3): self
/// signed, for `name` alone, with the critical acmeIdentifier extension
/// holding the SHA-256 of the key authorization.
pub fn validation_key(name: &str, key_authorization_digest: &[u8]) -> Result<CertifiedKey, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(
        key_authorization_digest,
    )];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_by_names_whatever_their_order() {
        let certs = AcmeCerts::default();
        let a = certs.slot(&["b.test".into(), "a.test".into()]);
        let b = certs.slot(&["a.test".into(), "b.test".into(), "a.test".into()]);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.names, ["a.test", "b.test"]);
        assert!(a.current().is_none());
        // Kept while a listener holds it; forgotten once none does.
        certs.retain(&[]);
        assert!(Arc::ptr_eq(
            &a,
            &certs.slot(&["a.test".into(), "b.test".into()])
        ));
        drop((a, b));
        certs.retain(&[]);
        assert_eq!(certs.slots.lock().unwrap().len(), 0);
    }

    #[test]
    fn challenges_are_answered_until_forgotten() {
        let c = Challenges::default();
        assert!(!c.answers_http());
        c.answer_http("tok", "tok.thumb");
        assert_eq!(c.http("tok").as_deref(), Some("tok.thumb"));
        assert!(c.http("other").is_none());
        c.forget_http("tok");
        assert!(!c.answers_http());
        let key = Arc::new(validation_key("a.test", &[7; 32]).unwrap());
        c.answer_tls_alpn("A.test", key);
        assert!(c.tls_alpn.load().contains_key("a.test"));
        c.forget_tls_alpn("a.test");
        assert!(c.tls_alpn.load().is_empty());
    }
}
