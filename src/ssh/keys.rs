//! Keys of the SSH console: the server's Ed25519 host key, generated once and kept
//! in a file so clients see the same key across restarts, and the operator's
//! OpenSSH `authorized_keys` file with a per-key access level and user name.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey};

use super::SshError;
use crate::config::Access;

/// Where the host key of a configuration file is kept when `<ssh hostKey>` is not
/// set: `<dir>/<stem>-ssh_host_ed25519_key` (and its public half beside it, with
/// `.pub` appended).
pub fn host_key_path(config_file: &Path) -> PathBuf {
    let stem = config_file
        .file_stem()
        .map_or_else(|| "txlb".into(), |s| s.to_string_lossy().into_owned());
    let dir = config_file.parent().unwrap_or(Path::new(""));
    dir.join(format!("{stem}-ssh_host_ed25519_key"))
}

/// The host key in `path` (OpenSSH private key format, any algorithm russh
/// serves), or a new Ed25519 key written there (mode 0600, with the public half
/// in `<path>.pub`) when the file does not exist. `None` makes a key that lives in
/// memory only (it changes on every start).
pub fn load_or_generate_host_key(path: Option<&Path>) -> Result<PrivateKey, SshError> {
    let Some(path) = path else {
        tracing::warn!(
            "SSH console without a configuration file: the host key changes on every start"
        );
        return generate();
    };
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| SshError::HostKey {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate()?;
            write_key(path, &key)?;
            tracing::info!(
                path = %path.display(),
                fingerprint = %key.fingerprint(HashAlg::Sha256),
                "generated the SSH host key"
            );
            Ok(key)
        }
        Err(e) => Err(SshError::HostKey {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn generate() -> Result<PrivateKey, SshError> {
    let mut seed = [0u8; 32];
    crate::admin::auth::random_bytes(&mut seed);
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment("txlb host key");
    Ok(key)
}

fn write_key(path: &Path, key: &PrivateKey) -> Result<(), SshError> {
    let fail = |reason: String| SshError::HostKey {
        path: path.to_path_buf(),
        reason,
    };
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| fail(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| fail(e.to_string()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fail(e.to_string()))?;
    // The public half, for operators who compare fingerprints (best effort).
    if let Ok(public) = key.public_key().to_openssh() {
        let mut pub_path = path.as_os_str().to_owned();
        pub_path.push(".pub");
        if let Err(error) = std::fs::write(&pub_path, format!("{public}\n")) {
            tracing::warn!(%error, "could not write the public host key");
        }
    }
    Ok(())
}

/// One key of the `authorized_keys` file.
#[derive(Debug, Clone)]
pub struct AuthorizedKey {
    /// The public key.
    pub key: PublicKey,
    /// What its holder may do: read-only when the line says `access=readonly`
    /// (as an option or a word of the comment), full otherwise.
    pub access: Access,
    /// The key's comment, for logs.
    pub comment: String,
    /// The one user name this key logs in as (option `user="NAME"`); `None`:
    /// any name is accepted, and the session acts and is logged as the key's
    /// fingerprint ([`AuthorizedKey::principal`]), never as the name claimed.
    pub user: Option<String>,
}

impl AuthorizedKey {
    /// Who a login with this key claiming `claimed` acts as: the key's `user`
    /// (only when claimed), else the key's SHA-256 fingerprint.
    pub fn principal(&self, claimed: &str) -> Option<String> {
        match &self.user {
            Some(user) => (user == claimed).then(|| user.clone()),
            None => Some(self.key.fingerprint(HashAlg::Sha256).to_string()),
        }
    }
}

/// Parses an OpenSSH `authorized_keys` text. Lines that are not keys are skipped
/// with a warning naming their line number; `#` lines and blank lines are
/// comments.
pub fn parse_authorized_keys(text: &str, origin: &Path) -> Vec<AuthorizedKey> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<russh::keys::ssh_key::authorized_keys::Entry>() {
            Ok(entry) => {
                let comment = entry.public_key().comment().to_string();
                let in_options = entry.config_opts().iter().any(is_readonly_word);
                let in_comment = comment.split_whitespace().any(is_readonly_word);
                let user = entry
                    .config_opts()
                    .iter()
                    .find_map(|o| o.strip_prefix("user="))
                    .map(|u| u.trim_matches('"').to_string());
                keys.push(AuthorizedKey {
                    user,
                    key: entry.public_key().clone(),
                    access: if in_options || in_comment {
                        Access::ReadOnly
                    } else {
                        Access::Full
                    },
                    comment,
                });
            }
            Err(error) => tracing::warn!(
                file = %origin.display(),
                line = index + 1,
                %error,
                "authorized_keys: line skipped"
            ),
        }
    }
    keys
}

fn is_readonly_word(word: &str) -> bool {
    let Some(value) = word.strip_prefix("access=") else {
        return false;
    };
    value.trim_matches('"').eq_ignore_ascii_case("readonly")
}

/// Reads and parses the `authorized_keys` file; an unreadable file gives no key
/// (and a warning), so a typo in the path locks key logins out rather than in.
pub async fn read_authorized_keys(path: &Path) -> Vec<AuthorizedKey> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => parse_authorized_keys(&text, path),
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "authorized_keys unreadable");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ssh-ed25519 BASE64` of a new key, without comment.
    fn other_key() -> String {
        let key = generate().unwrap();
        let line = key.public_key().to_openssh().unwrap();
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn access_from_options_or_comment_and_bad_lines_skipped() {
        let first = other_key();
        let second = other_key();
        let third = other_key();
        let text = format!(
            "# admins\n\
             {first} alice@example\n\
             access=readonly {second} bob@example\n\
             {third} carol access=readonly\n\
             \n\
             ssh-ed25519 not-base64 broken\n"
        );
        let keys = parse_authorized_keys(&text, Path::new("keys"));
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert_eq!(keys[0].access, Access::Full);
        assert_eq!(keys[0].comment, "alice@example");
        assert_eq!(keys[1].access, Access::ReadOnly);
        assert_eq!(keys[2].access, Access::ReadOnly);
        assert!(keys.iter().all(|k| k.user.is_none()));
        let fingerprint = keys[0].key.fingerprint(HashAlg::Sha256).to_string();
        assert_eq!(keys[0].principal("root").as_deref(), Some(&*fingerprint));
        let text = format!("access=readonly,user=\"ops\" {first} o\nuser=admin {second} a\n");
        let keys = parse_authorized_keys(&text, Path::new("keys"));
        assert_eq!(keys[0].user.as_deref(), Some("ops"));
        assert_eq!(keys[0].access, Access::ReadOnly);
        assert_eq!(keys[0].principal("ops").as_deref(), Some("ops"));
        assert_eq!(keys[0].principal("admin"), None);
        assert_eq!(keys[1].principal("admin").as_deref(), Some("admin"));
        assert_eq!(keys[1].access, Access::Full);
        assert!(is_readonly_word("access=\"readonly\""));
        assert!(!is_readonly_word("access=full"));
    }

    #[test]
    fn host_key_generated_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = host_key_path(&dir.path().join("txlb.xml"));
        assert!(path.ends_with("txlb-ssh_host_ed25519_key"));
        let first = load_or_generate_host_key(Some(&path)).unwrap();
        let again = load_or_generate_host_key(Some(&path)).unwrap();
        assert_eq!(first.public_key().key_data(), again.public_key().key_data());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let public = std::fs::read_to_string(format!("{}.pub", path.display())).unwrap();
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_or_generate_host_key(Some(&path)).is_err());
    }
}
