//! HTTPS for the admin server: rustls with the `cert`/`key` files named on `<web>`,
//! or a self-signed certificate generated once (rcgen) and kept next to the
//! configuration file, so its fingerprint stays the same across restarts.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::AdminError;
use crate::config::{AdminWebConfig, ListenHost};

/// Where the generated certificate and key of a configuration file live:
/// `<dir>/<stem>-admin.crt` and `<dir>/<stem>-admin.key`.
pub fn certificate_paths(config_file: &Path) -> (PathBuf, PathBuf) {
    let stem = config_file
        .file_stem()
        .map_or_else(|| "txlb".into(), |s| s.to_string_lossy().into_owned());
    let dir = config_file.parent().unwrap_or(Path::new(""));
    (
        dir.join(format!("{stem}-admin.crt")),
        dir.join(format!("{stem}-admin.key")),
    )
}

/// The rustls configuration for `<web secure="true">`: the configured `cert` and
/// `key` files, else the kept self-signed pair next to `config_file` (generated
/// on first use), else (no file at all) a certificate that lives in memory only.
pub fn server_config(
    web: &AdminWebConfig,
    config_file: Option<&Path>,
) -> Result<Arc<ServerConfig>, AdminError> {
    let (certs, key) = match (&web.cert, &web.key, config_file) {
        (Some(cert), Some(key), _) => load(cert, key)?,
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(AdminError::Tls(
                "cert and key must be given together on <web>".into(),
            ));
        }
        (None, None, Some(file)) => {
            let (cert, key) = certificate_paths(file);
            if !cert.exists() || !key.exists() {
                generate_files(web, &cert, &key)?;
                tracing::info!(cert = %cert.display(), "generated a self-signed admin certificate");
            }
            load(&cert, &key)?
        }
        (None, None, None) => {
            tracing::warn!(
                "admin TLS without a configuration file: the self-signed certificate changes on every start"
            );
            let generated = generate(web)?;
            let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
                .map_err(|e| AdminError::Tls(e.to_string()))?;
            (vec![generated.cert.der().clone()], key)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AdminError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| AdminError::Tls(format!("certificate and key do not work together: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), AdminError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| AdminError::Tls(format!("reading {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(AdminError::Tls(format!(
            "{} holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| AdminError::Tls(format!("reading {}: {e}", key.display())))?;
    Ok((certs, key))
}

/// Names the certificate is valid for: loopback and the configured listen host.
fn names(web: &AdminWebConfig) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    match &web.listen.host {
        ListenHost::Any => {}
        ListenHost::Ip(ip) => names.push(ip.to_string()),
        ListenHost::Name(n) => names.push(n.clone()),
    }
    names.dedup();
    names
}

fn generate(web: &AdminWebConfig) -> Result<rcgen::CertifiedKey<rcgen::KeyPair>, AdminError> {
    let mut seen = std::collections::HashSet::new();
    let names: Vec<String> = names(web)
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect();
    rcgen::generate_simple_self_signed(names)
        .map_err(|e| AdminError::Tls(format!("generating a certificate: {e}")))
}

fn generate_files(web: &AdminWebConfig, cert: &Path, key: &Path) -> Result<(), AdminError> {
    let generated = generate(web)?;
    let write = |path: &Path, text: &str, mode: u32| -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    // The key first, readable by the owner only; the certificate is public.
    write(key, &generated.signing_key.serialize_pem(), 0o600)
        .map_err(|e| AdminError::Tls(format!("writing {}: {e}", key.display())))?;
    write(cert, &generated.cert.pem(), 0o644)
        .map_err(|e| AdminError::Tls(format!("writing {}: {e}", cert.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_listen_addr;

    fn web() -> AdminWebConfig {
        AdminWebConfig {
            listen: parse_listen_addr("127.0.0.1:0").unwrap(),
            enable: true,
            secure: true,
            refresh: std::time::Duration::from_secs(10),
            metrics_public: false,
            cert: None,
            key: None,
            allowed_hosts: Vec::new(),
            changes_require_post: false,
        }
    }

    #[test]
    fn generated_pair_is_kept_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lb.xml");
        server_config(&web(), Some(&file)).unwrap();
        let (cert, key) = certificate_paths(&file);
        assert_eq!(cert, dir.path().join("lb-admin.crt"));
        let first = std::fs::read(&cert).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        server_config(&web(), Some(&file)).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        // The same files named explicitly work too.
        let mut w = web();
        w.cert = Some(cert);
        w.key = Some(key);
        server_config(&w, None).unwrap();
        w.key = None;
        assert!(server_config(&w, None).is_err());
    }
}
