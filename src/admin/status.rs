//! What the admin plane says about the configuration file besides the running
//! configuration itself: the outcome of the last reload ([`ReloadStatus`],
//! written by the library's one reload, `BalancerHandle::reload`) and a
//! write-back conflict (read through [`ConflictSource`]).
//!
//! Both show as panels at the top of the running page and the diff page, and as
//! `GET /api/v1/config/status`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::html::{ago, esc, unified_html, utc};
use super::{AdminState, Principal};
use crate::config::writeback::Conflict;
use crate::config::{Access, Config};

/// Reads the current write-back conflict: the configuration file was edited on
/// disk since it was loaded, so write-back leaves it alone (`None`: no conflict).
pub type ConflictSource = Arc<dyn Fn() -> Option<Conflict> + Send + Sync>;

pub use crate::reload::{Reload, ReloadStatus};

/// The current conflict and last reload, as read from the settings' hooks.
pub(crate) struct Snapshot {
    pub(crate) conflict: Option<Conflict>,
    pub(crate) reload: Option<Reload>,
}

impl Snapshot {
    pub(crate) fn read(state: &AdminState) -> Snapshot {
        Snapshot {
            conflict: state.settings.conflict.as_ref().and_then(|f| f()),
            reload: state.settings.reload.as_ref().and_then(|r| r.last()),
        }
    }

    /// What `access` may read of it: the conflict's differences without password
    /// hashes for read-only users ([`readable_text`]).
    pub(crate) fn readable_by(mut self, access: Access) -> Snapshot {
        if let Some(c) = &mut self.conflict {
            c.file_vs_boot = readable_text(access, std::mem::take(&mut c.file_vs_boot));
            c.running_vs_boot = readable_text(access, std::mem::take(&mut c.running_vs_boot));
        }
        self
    }

    /// A short token that changes whenever what the panels show changes (mixed
    /// into the page signature, so open pages reload to show it).
    pub(crate) fn token(&self) -> String {
        let mut d = Sha256::new();
        if let Some(c) = &self.conflict {
            d.update(b"c");
            d.update(c.file_vs_boot.as_bytes());
            d.update(c.running_vs_boot.as_bytes());
        }
        if let Some(r) = &self.reload {
            d.update(b"r");
            d.update(unix_secs(r.at).to_le_bytes());
            d.update(r.error.as_deref().unwrap_or("").as_bytes());
        }
        let digest = d.finalize();
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The HTML panels: the conflict with both differences, a refused reload
    /// with its error, or a one-line note of the last good reload.
    pub(crate) fn panels(&self) -> String {
        let mut p = String::new();
        if let Some(r) = &self.reload {
            match &r.error {
                Some(error) => {
                    let _ = write!(
                        p,
                        "<section class=\"warn err\" id=\"reload-status\" role=\"alert\">\
                         <h2>Reload refused</h2><p>The configuration file was read again at {} UTC \
                         <small>({})</small> and refused as a whole; the previous configuration \
                         keeps running. Fix the file and send SIGHUP again.</p>\
                         <pre class=\"error\">{}</pre></section>",
                        utc(r.at),
                        ago(r.at),
                        esc(error)
                    );
                }
                None => {
                    let _ = write!(
                        p,
                        "<p class=\"note\" id=\"reload-status\">Configuration file reloaded at {} UTC \
                         <small>({})</small>.</p>",
                        utc(r.at),
                        ago(r.at)
                    );
                }
            }
        }
        if let Some(c) = &self.conflict {
            let _ = write!(
                p,
                "<section class=\"warn\" id=\"conflict\" role=\"alert\">\
                 <h2>Configuration file edited on disk</h2>\
                 <p><code>{}</code> was changed on disk since txlb loaded or last wrote it, so \
                 it is not overwritten (saveConfig, configCheck). Reload it (SIGHUP) to run what \
                 it says, or undo the edit to let the running configuration be saved.</p>\
                 <h3>File on disk vs boot</h3>{}<h3>Running vs boot</h3>{}</section>",
                esc(&c.path.display().to_string()),
                unified_html(&c.file_vs_boot),
                unified_html(&c.running_vs_boot)
            );
        }
        p
    }

    /// The JSON of `GET /api/v1/config/status`.
    pub(crate) fn json(&self) -> Value {
        json!({
            "conflict": self.conflict.as_ref().map(|c| json!({
                "path": c.path.display().to_string(),
                "file_vs_boot": c.file_vs_boot,
                "running_vs_boot": c.running_vs_boot,
            })),
            "reload": self.reload.as_ref().map(|r| json!({
                "at": unix_secs(r.at),
                "at_utc": utc(r.at),
                "ok": r.error.is_none(),
                "error": r.error,
            })),
        })
    }
}

pub use crate::config::writeback::redact_passwords;

/// What `access` may read of a configuration text (a file, a rendering, a diff
/// of them): read-only users get every password hash replaced by `…`
/// ([`redact_passwords`], the log's redaction), full users the text as is.
pub fn readable_text(access: Access, text: String) -> String {
    match access {
        Access::Full => text,
        Access::ReadOnly => redact_passwords(&text),
    }
}

/// What `access` may read of a configuration: for read-only users every user's
/// password hash is `…`, whatever format it is shown in (XML, TOML, JSON).
pub fn readable_config(access: Access, mut config: Config) -> Config {
    if access != Access::Full
        && let Some(admin) = &mut config.admin
    {
        for user in &mut admin.users {
            // The mark redact_passwords leaves in texts.
            user.password_hash = "…".into();
        }
    }
    config
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `GET /api/v1/config/status`: the write-back conflict and the last reload.
pub(crate) async fn handler(
    State(state): State<AdminState>,
    Extension(who): Extension<Principal>,
) -> Json<Value> {
    Json(Snapshot::read(&state).readable_by(who.access).json())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn passwords_are_redacted_in_xml_and_toml() {
        let xml = "+    <user name=\"a\" password=\"$6$salt$hash\" access=\"full\"/>\n";
        assert_eq!(
            redact_passwords(xml),
            "+    <user name=\"a\" password=\"…\" access=\"full\"/>\n"
        );
        let toml = "-password = 'abDES12345678'\n name = \"password\"\n";
        assert_eq!(
            redact_passwords(toml),
            "-password = '…'\n name = \"password\"\n"
        );
        assert_eq!(
            redact_passwords("password=\"unclosed\nnext"),
            "password=\"…\"\nnext"
        );
        assert_eq!(redact_passwords("no secrets"), "no secrets");
    }

    #[test]
    fn reload_status_records_the_last_outcome() {
        let status = ReloadStatus::new();
        assert_eq!(status.last(), None);
        status.failed("lb.xml:3:5: unknown element <srvice>");
        let last = status.last().unwrap();
        assert_eq!(
            last.error.as_deref(),
            Some("lb.xml:3:5: unknown element <srvice>")
        );
        status.succeeded();
        assert_eq!(status.last().unwrap().error, None);
    }

    #[test]
    fn panels_show_both_differences_escaped() {
        let snapshot = Snapshot {
            conflict: Some(Conflict {
                path: PathBuf::from("/etc/lb.xml"),
                file_vs_boot: "--- a\n+++ b\n@@ -1 +1 @@\n-<old/>\n+<new/>\n".into(),
                running_vs_boot: "--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n".into(),
            }),
            reload: Some(Reload {
                at: SystemTime::now(),
                error: Some("lb.xml:2:1: <bad>".into()),
            }),
        };
        let html = snapshot.panels();
        assert!(html.contains("id=\"conflict\""), "{html}");
        assert!(html.contains("File on disk vs boot") && html.contains("Running vs boot"));
        assert!(
            html.contains("<span class=\"d\">-&lt;old/&gt;</span>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"a\">+y</span>"), "{html}");
        assert!(html.contains("Reload refused") && html.contains("lb.xml:2:1: &lt;bad&gt;"));
        let json = snapshot.json();
        assert_eq!(json["conflict"]["path"], "/etc/lb.xml");
        assert_eq!(json["reload"]["ok"], false);
        let before = snapshot.token();
        let cleared = Snapshot {
            conflict: None,
            reload: snapshot.reload.clone(),
        };
        assert_ne!(before, cleared.token());
        let nothing = Snapshot {
            conflict: None,
            reload: None,
        };
        assert_eq!(nothing.panels(), "");
        assert_eq!(nothing.json()["conflict"], Value::Null);
    }

    #[tokio::test]
    async fn pages_and_api_show_the_hooks() {
        use super::super::tests::{send, test_router_with};
        let conflict = Arc::new(Mutex::new(None::<Conflict>));
        let reload = Arc::new(ReloadStatus::new());
        let source = conflict.clone();
        let settings = super::super::AdminSettings {
            conflict: Some(Arc::new(move || source.lock().unwrap().clone())),
            reload: Some(reload.clone()),
            ..Default::default()
        };
        let (app, _handle, _) = test_router_with(settings).await;
        let (_, page) = send(&app, "GET", "/running", None).await;
        assert!(!page.contains("id=\"conflict\"") && !page.contains("reload-status"));
        let (_, body) = send(&app, "GET", "/api/v1/config/status", None).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, json!({"conflict": null, "reload": null}));

        *conflict.lock().unwrap() = Some(Conflict {
            path: PathBuf::from("lb.xml"),
            file_vs_boot: "@@ -1 +1 @@\n-a\n+b\n".into(),
            running_vs_boot: "@@ -1 +1 @@\n-a\n+c\n".into(),
        });
        reload.failed("lb.xml:1:2: broken");
        for path in ["/running", "/diff"] {
            let (_, page) = send(&app, "GET", path, None).await;
            assert!(page.contains("id=\"conflict\""), "{path}: {page}");
            assert!(page.contains("<span class=\"a\">+c</span>"), "{path}");
            assert!(page.contains("lb.xml:1:2: broken"), "{path}");
        }
        let (_, body) = send(&app, "GET", "/api/v1/config/status", None).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["conflict"]["running_vs_boot"], "@@ -1 +1 @@\n-a\n+c\n");
        assert_eq!(v["reload"]["error"], "lb.xml:1:2: broken");
    }
}
