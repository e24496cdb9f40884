//! The real `txlb` binary's admin plane reporting on its configuration file: a
//! file edited on disk is not overwritten by `saveConfig`, and the conflict shows
//! with both differences on the pages, in the JSON API and in the log; a SIGHUP
//! with a broken file shows its error (file:line:column) until a good reload
//! clears it. Also the default grace period at shutdown.

use crate::common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::admin::{FULL, client};
use common::binary::Txlb;
use common::*;
use serde_json::Value;

const TXLB: &str = env!("CARGO_BIN_EXE_txlb");

/// Service `svc` over `hosts`, the admin web server on 127.0.0.1:0 with the test
/// users, configCheck off (the default).
fn xml(hosts: &[(&str, SocketAddr)]) -> String {
    let hosts = common::host_lines(hosts);
    let users: String = common::admin::user_lines();
    format!(
        "<config>\n  <!-- the operator's comment -->\n  <service name=\"svc\">\n    \
         <listen ip=\"127.0.0.1:0\"/>\n    <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n\
         {hosts}    </group>\n  </service>\n  <admin>\n    \
         <web listen=\"127.0.0.1:0\" enable=\"true\" refresh=\"1\"/>\n{users}  </admin>\n</config>\n"
    )
}

/// txlb on `xml` with host `a`, written to a fresh `lb.xml`.
struct Started {
    txlb: Txlb,
    /// Its admin web server's URL.
    base: String,
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

async fn started(a: SocketAddr) -> Started {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    std::fs::write(&path, xml(&[("a", a)])).unwrap();
    let txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    Started {
        txlb,
        base,
        dir,
        path,
    }
}

/// GET `path` as the full user: status and body.
async fn get(base: &str, path: &str) -> (u16, String) {
    let response = client()
        .get(format!("{base}{path}"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn config_status(base: &str) -> Value {
    let (status, body) = get(base, "api/v1/config/status").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A service `newService` made has no host yet: saved, the file loads
/// (and `txlb check` warns), so an upgrade, which hands the running
/// configuration over as a file, takes it too.
#[tokio::test]
async fn a_new_service_without_hosts_is_saved_and_loads() {
    let a = named_backend("a", Hold::Close).await;
    let Started {
        txlb: _txlb,
        base,
        dir: _dir,
        path,
    } = started(a).await;
    let port = common::servers::free_port();
    let (status, text) = get(
        &base,
        &format!("newService?service=web&listen=127.0.0.1:{port}"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = get(&base, "saveConfig").await;
    assert_eq!(status, 200, "{text}");
    let saved = txlb::config::Config::from_path(&path).expect("the saved file loads");
    let web = saved.services.iter().find(|s| s.name == "web").unwrap();
    assert!(web.groups.iter().all(|g| g.hosts.is_empty()));
    let check = Command::new(env!("CARGO_BIN_EXE_txlb"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{said}");
    assert!(
        said.contains("has no host, so its clients are closed"),
        "{said}"
    );
}

/// An edit reloaded is the file's content from then on: a change made at
/// run time after it is saved into the edited file (keeping the edit), not
/// refused as a conflict with it.
#[tokio::test]
async fn a_change_after_an_edit_was_reloaded_is_saved_into_the_edited_file() {
    let (a, b) = (
        named_backend("a", Hold::Close).await,
        named_backend("b", Hold::Close).await,
    );
    let Started {
        txlb,
        base,
        dir: _dir,
        path,
    } = started(a).await;
    let edited = xml(&[("a", a), ("c", a)]).replace(
        "<!-- the operator's comment -->",
        "<!-- edited by hand while txlb runs -->",
    );
    std::fs::write(&path, &edited).unwrap();
    let skip = txlb.log_len();
    txlb.signal("HUP");
    txlb.wait_for_async("configuration reloaded", skip).await;
    let (status, text) = get(&base, &format!("addHost?service=svc&group=g&name=b&ip={b}")).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = get(&base, "saveConfig").await;
    assert_eq!(status, 200, "{text}");
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(saved.contains("edited by hand while txlb runs"), "{saved}");
    assert!(saved.contains("name=\"c\""), "{saved}");
    assert!(saved.contains(&format!("name=\"b\" ip=\"{b}\"")), "{saved}");
    assert_eq!(config_status(&base).await["conflict"], Value::Null);
}

#[tokio::test]
async fn a_file_edited_on_disk_is_not_overwritten_and_the_conflict_is_shown() {
    let (a, b) = (
        named_backend("a", Hold::Close).await,
        named_backend("b", Hold::Close).await,
    );
    let Started {
        txlb,
        base,
        dir,
        path,
    } = started(a).await;
    assert_eq!(config_status(&base).await["conflict"], Value::Null);

    // A change at run time, and meanwhile an edit of the file on disk.
    let (status, text) = get(&base, &format!("addHost?service=svc&group=g&name=b&ip={b}")).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = get(&base, "addUser?name=ops&password=pw-12345&access=readonly").await;
    assert_eq!(status, 200, "{text}");
    let edited = xml(&[("a", a)]).replace(
        "<!-- the operator's comment -->",
        "<!-- edited by hand while txlb runs -->",
    );
    std::fs::write(&path, &edited).unwrap();

    let (status, text) = get(&base, "saveConfig").await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("edited on disk"), "{text}");
    assert!(text.contains("lb.xml"), "{text}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
    assert!(!dir.path().join("lb.xml.bak").exists());
    // Logged with both differences, password hashes left out.
    txlb.wait_for_async("not overwritten", 0).await;
    // The diffs span several lines: everything logged from that line on, once
    // the running diff's host line is in.
    let since = |log: &[String]| {
        let all = log.join("\n");
        let at = all.find("not overwritten").unwrap();
        all[at..].to_string()
    };
    let b_line = format!("name=\"b\" ip=\"{b}\"");
    let log = txlb.log.clone();
    let complete = eventually(Duration::from_secs(5), || {
        let (log, b_line) = (log.clone(), b_line.clone());
        async move { since(&log.lock().unwrap()).contains(&b_line) }
    })
    .await;
    let logged = since(&txlb.log.lock().unwrap());
    assert!(complete, "{logged}");
    assert!(
        logged.contains("edited by hand while txlb runs"),
        "{logged}"
    );
    assert!(logged.contains("name=\"ops\" password=\"…\""), "{logged}");
    assert!(!logged.contains("$6$"), "{logged}");

    // The running page and the diff page show both differences.
    for page in ["running", "diff"] {
        let (status, html) = get(&base, page).await;
        assert_eq!(status, 200);
        assert!(html.contains("id=\"conflict\""), "{page}: {html}");
        let file_diff = html.split("File on disk vs boot").nth(1).unwrap();
        let (file_diff, running_diff) = file_diff.split_once("Running vs boot").unwrap();
        assert!(
            file_diff
                .contains("<span class=\"a\">+  &lt;!-- edited by hand while txlb runs --&gt;"),
            "{page}: {file_diff}"
        );
        assert!(
            file_diff.contains("<span class=\"d\">-  &lt;!-- the operator&#39;s comment --&gt;"),
            "{page}: {file_diff}"
        );
        assert!(
            running_diff.contains("<span class=\"a\">+") && running_diff.contains(&b.to_string()),
            "{page}: {running_diff}"
        );
    }
    let status = config_status(&base).await;
    let conflict = &status["conflict"];
    assert!(conflict["path"].as_str().unwrap().ends_with("lb.xml"));
    assert!(
        conflict["file_vs_boot"]
            .as_str()
            .unwrap()
            .contains("+  <!-- edited by hand while txlb runs -->")
    );
    assert!(
        conflict["running_vs_boot"]
            .as_str()
            .unwrap()
            .contains(&b.to_string())
    );
    // Still not overwritten on a second try.
    let (status, _) = get(&base, "saveConfig").await;
    assert_eq!(status, 409);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);

    // Reloading the edited file resolves the conflict (the file is the base
    // again, once the reload has taken it as such: the conflict shown clears
    // as soon as the running configuration is the file's, a moment before).
    txlb.signal("HUP");
    txlb.wait_for_async("holds the running configuration: taken as the new base", 0)
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            config_status(&base).await["conflict"].is_null()
        })
        .await,
        "the conflict stays after reloading the edited file"
    );
    let (_, html) = get(&base, "running").await;
    assert!(!html.contains("id=\"conflict\""));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
    // A save now has nothing to write, and says so in words.
    let (status, text) = get(&base, "saveConfig").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("lb.xml: the file already held the running configuration"),
        "{text}"
    );
    assert!(
        !text.contains("Unchanged") && !text.contains("Adopted"),
        "{text}"
    );
}

/// The conflict panel follows the running configuration and the file as they
/// are now, not as they were at the last save.
#[tokio::test]
async fn the_conflict_shown_follows_the_running_configuration_and_the_file() {
    let a = named_backend("a", Hold::Close).await;
    let b = named_backend("b", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let original = xml(&[("a", a)]);
    std::fs::write(&path, &original).unwrap();
    let txlb = Txlb::start(&path, 1);
    let base = txlb.logged("admin web server up", "url").await;
    let (status, text) = get(&base, &format!("addHost?service=svc&group=g&name=b&ip={b}")).await;
    assert_eq!(status, 200, "{text}");
    let edited = original.replace("refresh=\"1\"", "refresh=\"3\"");
    std::fs::write(&path, &edited).unwrap();
    let (status, _) = get(&base, "saveConfig").await;
    assert_eq!(status, 409);
    let running_diff = |v: &Value| {
        v["conflict"]["running_vs_boot"]
            .as_str()
            .map(str::to_string)
    };
    let b_text = b.to_string();
    assert!(
        running_diff(&config_status(&base).await)
            .unwrap()
            .contains(&b_text)
    );

    // The running configuration back to the boot one: no running difference
    // any more, while the edit on disk still stands.
    let (status, text) = get(&base, "delHost?service=svc&group=g&name=b").await;
    assert_eq!(status, 200, "{text}");
    let now = config_status(&base).await;
    assert_eq!(running_diff(&now).as_deref(), Some(""), "{now}");
    assert!(
        now["conflict"]["file_vs_boot"]
            .as_str()
            .unwrap()
            .contains("refresh=\"3\"")
    );
    for page in ["running", "diff"] {
        let (_, html) = get(&base, page).await;
        let running_part = html.split("Running vs boot").nth(1).unwrap();
        assert!(!running_part.contains(&b_text), "{page}: {running_part}");
    }
    // The edit undone on disk: no conflict at all.
    std::fs::write(&path, &original).unwrap();
    let now = config_status(&base).await;
    assert_eq!(now["conflict"], Value::Null, "{now}");
    let (_, html) = get(&base, "running").await;
    assert!(!html.contains("id=\"conflict\""));
}

#[tokio::test]
async fn a_broken_reload_is_shown_with_its_location_until_a_good_one() {
    let (a, b) = (
        named_backend("a", Hold::Close).await,
        named_backend("b", Hold::Close).await,
    );
    let Started {
        txlb,
        base,
        dir: _dir,
        path,
    } = started(a).await;
    let listener: SocketAddr = txlb.logged("listener up", "local").await.parse().unwrap();
    assert_eq!(config_status(&base).await["reload"], Value::Null);

    // A scheduler that does not exist, on line 5 of the file.
    let broken = xml(&[("a", a), ("b", b)]).replace("scheduler=\"roundr\"", "scheduler=\"nope\"");
    std::fs::write(&path, &broken).unwrap();
    let started = Instant::now();
    txlb.signal("HUP");
    let refused = |status: &Value| status["reload"]["ok"] == false;
    assert!(
        eventually(Duration::from_secs(10), || async {
            refused(&config_status(&base).await)
        })
        .await
    );
    let status = config_status(&base).await;
    let error = status["reload"]["error"].as_str().unwrap().to_string();
    assert!(error.contains("lb.xml:5:"), "{error}");
    let location = error.split("lb.xml:5:").nth(1).unwrap();
    assert!(
        location.split(':').next().unwrap().parse::<u32>().is_ok(),
        "no column in {error}"
    );
    assert!(status["reload"]["at"].as_u64().unwrap() > 0);
    assert!(started.elapsed() < Duration::from_secs(10));
    txlb.wait_for_async("reload refused", 0).await;
    let (_, html) = get(&base, "running").await;
    assert!(html.contains("Reload refused"), "{html}");
    let escaped = error.replace('"', "&quot;").replace('\'', "&#39;");
    assert!(html.contains(&escaped), "{error} not in {html}");
    // The old configuration serves on: only `a`.
    for _ in 0..3 {
        assert_eq!(which_backend(listener).await.0, "a");
    }

    // Fixed: the next SIGHUP applies it and the error is gone.
    std::fs::write(&path, xml(&[("a", a), ("b", b)])).unwrap();
    txlb.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            config_status(&base).await["reload"]["ok"] == true
        })
        .await
    );
    let status = config_status(&base).await;
    assert_eq!(status["reload"]["error"], Value::Null);
    let (_, html) = get(&base, "running").await;
    assert!(!html.contains("Reload refused"), "{html}");
    assert!(html.contains("Configuration file reloaded at"), "{html}");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(which_backend(listener).await.0);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn the_default_grace_period_is_30_seconds() {
    let output = Command::new(TXLB).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    let grace = help
        .split("--grace")
        .nth(1)
        .unwrap_or_else(|| panic!("no --grace in {help}"));
    let grace = grace.split("--").next().unwrap();
    assert!(grace.contains("[default: 30]"), "{grace}");
}

/// A self-signed certificate for 127.0.0.1 written to `cert` and `key`; returns
/// it for a client to trust.
fn write_certificate(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> rustls::pki_types::CertificateDer<'static> {
    let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(cert, pair.cert.pem()).unwrap();
    std::fs::write(key, pair.signing_key.serialize_pem()).unwrap();
    pair.cert.der().clone()
}

/// Whether a client trusting only `cert` gets the running page from `base`.
async fn serves_with(base: &str, cert: &rustls::pki_types::CertificateDer<'static>) -> bool {
    let client = common::admin::client_trusting(std::slice::from_ref(cert));
    match client
        .get(format!("{base}running.txt"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
    {
        Ok(response) => response.status() == 200,
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_reload_moves_rekeys_and_stops_the_admin_web_server() {
    let a = named_backend("a", Hold::Close).await;
    let b = named_backend("b", Hold::Close).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let (cert, key) = (dir.path().join("admin.crt"), dir.path().join("admin.key"));
    std::fs::write(&path, xml(&[("a", a)])).unwrap();
    let txlb = Txlb::start(&path, 1);
    let old_base = txlb.logged("admin web server up", "url").await;
    let listener: SocketAddr = txlb.logged("listener up", "local").await.parse().unwrap();
    assert_eq!(get(&old_base, "running.txt").await.0, 200);

    // Moved to another port, now HTTPS with the operator's certificate.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let first = write_certificate(&cert, &key);
    let secure = |hosts: &[(&str, SocketAddr)]| {
        xml(hosts).replace(
            "<web listen=\"127.0.0.1:0\" enable=\"true\"",
            &format!(
                "<web listen=\"127.0.0.1:{port}\" secure=\"true\" cert=\"{}\" key=\"{}\" enable=\"true\"",
                cert.display(),
                key.display()
            ),
        )
    };
    std::fs::write(&path, secure(&[("a", a)])).unwrap();
    let mark = txlb.log_len();
    txlb.signal("HUP");
    let moved = txlb.wait_for_async("admin web server up", mark).await;
    let base = format!("https://127.0.0.1:{port}/");
    assert!(moved.contains(&base), "{moved}");
    assert!(serves_with(&base, &first).await);
    assert!(
        eventually(Duration::from_secs(5), || async {
            client().get(&old_base).send().await.is_err()
        })
        .await,
        "the old address still answers"
    );

    // A renewed certificate in the same files: re-read at the next SIGHUP, on
    // the same address.
    let second = write_certificate(&cert, &key);
    let mark = txlb.log_len();
    txlb.signal("HUP");
    txlb.wait_for_async("certificate reloaded", mark).await;
    assert!(serves_with(&base, &second).await);
    assert!(!serves_with(&base, &first).await);

    // A broken key refuses the whole reload: the new host is not added, the
    // server keeps its certificate.
    std::fs::write(&key, "not a key").unwrap();
    std::fs::write(&path, secure(&[("a", a), ("b", b)])).unwrap();
    let mark = txlb.log_len();
    txlb.signal("HUP");
    txlb.wait_for_async("reload refused", mark).await;
    let status: Value = common::admin::client_trusting(std::slice::from_ref(&second))
        .get(format!("{base}api/v1/config/status"))
        .basic_auth(FULL.0, Some(FULL.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["reload"]["ok"], false, "{status}");
    let error = status["reload"]["error"].as_str().unwrap();
    assert!(error.contains("admin web server"), "{error}");
    assert!(error.contains("admin.key"), "{error}");
    for _ in 0..3 {
        assert_eq!(which_backend(listener).await.0, "a");
    }
    assert!(serves_with(&base, &second).await);

    // Disabled: the server stops, the balancer serves on with the new host.
    write_certificate(&cert, &key);
    std::fs::write(
        &path,
        secure(&[("a", a), ("b", b)])
            .replace("enable=\"true\" refresh", "enable=\"false\" refresh"),
    )
    .unwrap();
    txlb.signal("HUP");
    txlb.wait_for_async("disabled by the configuration", 0)
        .await;
    assert!(!serves_with(&base, &second).await);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(which_backend(listener).await.0);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}
