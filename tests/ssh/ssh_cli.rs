//! The real `txlb` binary with `<admin><ssh>` in its XML configuration: the SSH
//! console comes up with the balancer, its Ed25519 host key is generated next to
//! the file and is the same after a restart (as `ssh-keyscan` sees it), and
//! `config save` writes the change into the file.

use crate::common;

use std::net::SocketAddr;
use std::process::Command;

use common::binary::Txlb;
use common::ssh::*;
use common::*;
use tokio::io::AsyncWriteExt;

/// The server's Ed25519 key as `ssh-keyscan` reports it (`ssh-ed25519 BASE64`).
fn keyscan(port: u16) -> String {
    let output = Command::new("ssh-keyscan")
        .args([
            "-T",
            "10",
            "-t",
            "ed25519",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && l.contains("ssh-ed25519"))
        .unwrap_or_else(|| panic!("no key from ssh-keyscan: {text}"));
    line.split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
}

fn xml(host: SocketAddr) -> String {
    let users: String = common::admin::user_lines();
    format!(
        "<config>\n  <!-- kept by tests -->\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n      <host name=\"a\" ip=\"{host}\"/>\n    \
         </group>\n  </service>\n  <admin>\n    \
         <ssh listen=\"127.0.0.1:0\" enable=\"true\" authorizedKeys=\"authorized_keys\"/>\n\
         {users}  </admin>\n</config>\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_is_kept_across_restarts_and_config_save_writes_the_file() {
    if ssh_missing() {
        return;
    }
    let keys = Keys::new();
    let dir = keys.dir.path();
    let config = dir.join("lb.xml");
    let backend = named_backend("a", Hold::Close).await;
    std::fs::write(&config, xml(backend)).unwrap();
    let key_file = dir.join("lb-ssh_host_ed25519_key");
    assert!(!key_file.exists());

    let mut txlb = Txlb::start(&config, 2);
    let local: SocketAddr = txlb
        .logged("SSH console up", "local")
        .await
        .parse()
        .unwrap();
    assert!(
        key_file.exists(),
        "the host key is kept next to the configuration"
    );
    let first = keyscan(local.port());
    let public = std::fs::read_to_string(dir.join("lb-ssh_host_ed25519_key.pub")).unwrap();
    assert!(public.starts_with(&first), "{public} vs {first}");
    // The console drives this balancer, and config save writes the file.
    let run = |command: &'static str| {
        let keys = &keys;
        async move {
            ssh(
                local.port(),
                &keys.full,
                &keys.known_hosts,
                "admin",
                command,
                None,
            )
            .await
        }
    };
    let ran = run("host add svc g extra 127.0.0.1:9; config save").await;
    assert_eq!(ran.status, 0, "{ran:?}");
    assert!(ran.stdout.contains("OK configuration saved to"), "{ran:?}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(saved.contains("<!-- kept by tests -->"), "{saved}");
    assert!(saved.contains("name=\"extra\""), "{saved}");
    assert!(
        saved.contains("authorizedKeys=\"authorized_keys\""),
        "{saved}"
    );
    let ran = run("show services").await;
    assert!(ran.stdout.starts_with("SERVICE"), "{ran:?}");
    assert!(txlb.terminate().success());

    // A second start (on another port): the same host key, the saved host.
    let mut again = Txlb::start(&config, 2);
    let local: SocketAddr = again
        .logged("SSH console up", "local")
        .await
        .parse()
        .unwrap();
    assert_eq!(keyscan(local.port()), first);
    let ran = ssh(
        local.port(),
        &keys.full,
        &keys.known_hosts,
        "admin",
        "show hosts svc g --json",
        None,
    )
    .await;
    assert_eq!(ran.status, 0, "{ran:?}");
    assert!(
        ran.stdout.contains("\"extra\""),
        "the saved host is back: {ran:?}"
    );
    assert!(again.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_and_stops_the_console_while_a_session_runs_on() {
    if ssh_missing() {
        return;
    }
    let keys = Keys::new();
    let dir = keys.dir.path();
    let config = dir.join("lb.xml");
    let backend = named_backend("a", Hold::Close).await;
    std::fs::write(&config, xml(backend)).unwrap();
    let txlb = Txlb::start(&config, 2);
    let old: SocketAddr = txlb
        .logged("SSH console up", "local")
        .await
        .parse()
        .unwrap();
    let key = keyscan(old.port());
    // A console session (commands on its standard input) open across the move.
    let mut session = ssh_session(old.port(), &keys.full, &keys.known_hosts, false);
    let mut input = session.stdin.take().unwrap();
    input.write_all(b"show services\n").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;

    // Moved to another port: the same host key there, the old port refuses.
    let new_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let moved = xml(backend).replace(
        "<ssh listen=\"127.0.0.1:0\"",
        &format!("<ssh listen=\"127.0.0.1:{new_port}\""),
    );
    std::fs::write(&config, &moved).unwrap();
    let mark = txlb.log_len();
    txlb.signal("HUP");
    let up = txlb.wait_for_async("SSH console up", mark).await;
    assert!(up.contains(&format!("127.0.0.1:{new_port}")), "{up}");
    assert_eq!(keyscan(new_port), key);
    assert!(
        std::net::TcpStream::connect(old).is_err(),
        "the old port still accepts"
    );
    input.write_all(b"show hosts svc g\n").await.unwrap();
    drop(input);
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        session.wait_with_output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("SERVICE") && stdout.contains("HOST"),
        "the session open across the move answered both commands: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Disabled: the console stops, the balancer serves on.
    std::fs::write(
        &config,
        moved.replace(
            "enable=\"true\" authorizedKeys",
            "enable=\"false\" authorizedKeys",
        ),
    )
    .unwrap();
    let mark = txlb.log_len();
    txlb.signal("HUP");
    // The console on the new port (the old one logs its own line once the
    // session it kept across the move has ended, perhaps only now).
    txlb.wait_for_async(
        &format!("SSH console stopped local=127.0.0.1:{new_port}"),
        mark,
    )
    .await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", new_port)).is_err());
    assert_eq!(which_backend(txlb.listener()).await.0, "a");
}

/// The console's `config reload` is SIGHUP's reload, the library's one, and
/// the JSON API's `POST /api/v1/config/reload`: it resolves a write-back
/// conflict, records its outcome for the admin pages, logs what changed and
/// moves the admin plane, and a broken file is refused the same way from all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_the_api_and_sighup_reload_the_same_way() {
    if ssh_missing() {
        return;
    }
    let keys = Keys::new();
    let dir = keys.dir.path();
    let config = dir.join("lb.xml");
    let backend = named_backend("a", Hold::Close).await;
    let with_web = |refresh: u32| {
        xml(backend).replace(
            "  <admin>\n",
            &format!(
                "  <admin>\n    <web listen=\"127.0.0.1:0\" enable=\"true\" refresh=\"{refresh}\"/>\n"
            ),
        )
    };
    std::fs::write(&config, with_web(1)).unwrap();
    let txlb = Txlb::start(&config, 2);
    let console: SocketAddr = txlb
        .logged("SSH console up", "local")
        .await
        .parse()
        .unwrap();
    let base = txlb.logged("admin web server up", "url").await;
    let status = || {
        let base = base.clone();
        async move {
            let (code, body) =
                common::admin::get_as(&base, common::admin::FULL, "api/v1/config/status").await;
            assert_eq!(code, 200, "{body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };
    let run = |command: &'static str| {
        let keys = &keys;
        async move {
            ssh(
                console.port(),
                &keys.full,
                &keys.known_hosts,
                "admin",
                command,
                None,
            )
            .await
        }
    };

    // A write-back conflict: a change at run time, and the file edited on disk.
    let ran = run("host add svc g extra 127.0.0.1:9").await;
    assert_eq!(ran.status, 0, "{ran:?}");
    let edited = with_web(1).replace("<!-- kept by tests -->", "<!-- edited by hand -->");
    std::fs::write(&config, &edited).unwrap();
    run("config save").await.assert_refused("edited on disk");
    assert!(status().await["conflict"].is_object());

    // The console's reload resolves it, is shown on the admin pages, logs what
    // changed, and applies the file (the host added at run time is gone).
    let mark = txlb.log_len();
    let ran = run("config reload").await;
    assert_eq!(ran.status, 0, "{ran:?}");
    assert!(
        ran.stdout.contains("OK configuration reloaded from") && ran.stdout.contains("lb.xml"),
        "{ran:?}"
    );
    let now = status().await;
    assert_eq!(now["conflict"], serde_json::Value::Null, "{now}");
    assert_eq!(now["reload"]["ok"], true, "{now}");
    let line = txlb.wait_for_async("configuration reloaded", mark).await;
    assert!(line.contains("changes="), "{line}");
    let ran = run("show hosts svc g").await;
    assert!(!ran.stdout.contains("extra"), "{ran:?}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);

    // A broken file: refused from the console, with its location, and shown.
    let broken = edited.replace("scheduler=\"roundr\"", "scheduler=\"nope\"");
    std::fs::write(&config, &broken).unwrap();
    let ran = run("config reload").await;
    ran.assert_refused("reload refused");
    assert!(ran.stderr.contains("lb.xml:"), "{ran:?}");
    let now = status().await;
    assert_eq!(now["reload"]["ok"], false, "{now}");
    assert!(
        now["reload"]["error"].as_str().unwrap().contains("lb.xml:"),
        "{now}"
    );
    // SIGHUP refuses it the same way.
    let mark = txlb.log_len();
    txlb.signal("HUP");
    let line = txlb.wait_for_async("reload refused", mark).await;
    assert!(line.contains("lb.xml:"), "{line}");
    // And the JSON API.
    let response = common::admin::client()
        .post(format!("{base}api/v1/config/reload"))
        .basic_auth(common::admin::FULL.0, Some(common::admin::FULL.1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("reload refused") && body.contains("lb.xml:"),
        "{body}"
    );

    // A new <web> setting: the console's reload moves the admin web server
    // (restarted on its socket), as SIGHUP does.
    let mark = txlb.log_len();
    std::fs::write(&config, with_web(2)).unwrap();
    let ran = run("config reload").await;
    assert_eq!(ran.status, 0, "{ran:?}");
    let up = txlb.wait_for_async("admin web server up", mark).await;
    assert!(up.contains(&base), "{up}");
    assert_eq!(status().await["reload"]["ok"], true);
    let response = common::admin::client()
        .post(format!("{base}api/v1/config/reload"))
        .basic_auth(common::admin::FULL.0, Some(common::admin::FULL.1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("configuration reloaded"), "{body}");
}
