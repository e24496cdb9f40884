//! The JSON API and the rest of the admin server over real HTTP(S): a walk of the
//! OpenAPI document (every documented operation answers as documented), live
//! events, public metrics, and HTTPS with the kept self-signed certificate.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::admin::{Admin, FULL, READONLY, client_trusting, two_group_config};
use common::eventually;
use reqwest::Method;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;
use txlb::admin::AdminSettings;

/// A fresh balancer for one operation: `svc` with a second listener on
/// 127.0.0.2:0, a configuration file to save to, and both hooks.
async fn fixture(dir: &std::path::Path) -> Admin {
    let mut config = two_group_config().await;
    config.services[0].listeners.push(
        txlb::config::parse_listen_addr("127.0.0.2:0")
            .unwrap()
            .into(),
    );
    // A terminating listener, for the certificate's replacement.
    let (cert, key) = pem_pair();
    std::fs::write(dir.join("site.pem"), cert).unwrap();
    std::fs::write(dir.join("site.key"), key).unwrap();
    let mut tls =
        txlb::config::Listener::new(txlb::config::parse_listen_addr("127.0.0.3:0").unwrap());
    tls.tls = Some(txlb::config::ListenerTls {
        certs: vec![txlb::config::TlsCert::new(
            dir.join("site.pem"),
            dir.join("site.key"),
        )],
        ..Default::default()
    });
    config.services[0].listeners.push(tls);
    let path = dir.join("lb.xml");
    config.source = Some(path.clone());
    // The file it was loaded from, for saveConfig's write-back and
    // `POST /api/v1/config/reload`.
    std::fs::write(&path, config.to_xml()).unwrap();
    let (text, boot) = txlb::config::writeback::load(&path).unwrap();
    let writeback = txlb::config::writeback::WriteBack::new(&path, text, boot);
    let settings = AdminSettings {
        reopen_log: Some(Arc::new(|| Ok(()))),
        save_config: Some(Arc::new(move |running: &txlb::config::Config| {
            writeback.save_reply(running)
        })),
        ..AdminSettings::default()
    };
    Admin::start(config, settings).await
}

/// A self-signed certificate for `site.test` and its key, as PEM.
fn pem_pair() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["site.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// `path` with its parameters filled with names that exist in [`fixture`]
/// (`service` replaces the service name, for the refusal walk).
fn fill(path: &str, method: &str, service: &str) -> String {
    // Removing a group or all its hosts is allowed for the standby group only.
    let standby = method == "delete"
        && (path.ends_with("/groups/{group}") || path.ends_with("/groups/{group}/hosts"));
    let (group, host) = if standby { ("spare", "s1") } else { ("g", "a") };
    // Certificates: the terminating listener's first.
    let listen = if path.contains("/certificates/") {
        "127.0.0.3%3A0"
    } else {
        "127.0.0.2%3A0"
    };
    path.replace("{service}", service)
        .replace("{group}", group)
        .replace("{host}", host)
        .replace("{listen}", listen)
        .replace("{index}", "0")
        .replace("{name}", "viewer")
}

async fn send(
    admin: &Admin,
    user: (&str, &str),
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = admin
        .client
        .request(
            method,
            format!("{}{}", admin.base, path.trim_start_matches('/')),
        )
        .basic_auth(user.0, Some(user.1));
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let admin = fixture(dir.path()).await;
    let doc: Value = send(&admin, FULL, "get", "/api/v1/openapi.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc, txlb::admin::openapi_document());
    // The API's root says where the description is and lists every operation.
    for root in ["/api/v1/", "/api/v1"] {
        let response = send(&admin, FULL, "get", root, None).await;
        assert_eq!(response.status(), 200, "{root}");
        let index: Value = response.json().await.unwrap();
        assert_eq!(index["openapi"], "/api/v1/openapi.json");
        let endpoints = index["endpoints"].as_array().unwrap();
        assert!(
            endpoints.contains(&Value::from("GET /api/v1/stats")),
            "{index}"
        );
        assert!(
            endpoints.contains(&Value::from("POST /api/v1/config/save")),
            "{index}"
        );
    }
    let paths = doc["paths"].as_object().unwrap();
    let mut walked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            walked += 1;
            let responses = op["responses"].as_object().unwrap();
            let success: u16 = responses
                .keys()
                .filter_map(|k| k.parse::<u16>().ok())
                .find(|s| (200..300).contains(s))
                .unwrap_or_else(|| panic!("{method} {path}: no success response"));
            let body = op["requestBody"]["content"]["application/json"]["example"].clone();
            let mut body = (!body.is_null()).then_some(body);
            // The example's PEM is elided: a real pair.
            if path.contains("/certificates/") {
                let (cert, key) = pem_pair();
                body = Some(serde_json::json!({"cert": cert, "key": key}));
            }

            // The happy path, on a fresh balancer.
            let dir = tempfile::tempdir().unwrap();
            let admin = fixture(dir.path()).await;
            let mut uri = fill(path, method, "svc");
            let mut _held = None;
            if uri.contains("{id}") {
                let (id, stream) = open_connection(&admin).await;
                _held = Some(stream);
                uri = uri.replace("{id}", &id.to_string());
            }
            let response = send(&admin, FULL, method, &uri, body.as_ref()).await;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            if path.ends_with("/events") {
                assert_eq!(status, 200, "{method} {uri}");
                assert!(
                    content_type.starts_with("text/event-stream"),
                    "{content_type}"
                );
                continue;
            }
            let text = response.text().await.unwrap();
            assert_eq!(status, success, "{method} {uri}: {text}");
            if status != 204 {
                assert!(
                    content_type.starts_with("application/json"),
                    "{method} {uri}"
                );
                serde_json::from_str::<Value>(&text).unwrap();
            }

            // A refusal: an unknown service, where the path names one.
            if path.contains("{service}") {
                let dir = tempfile::tempdir().unwrap();
                let admin = fixture(dir.path()).await;
                let uri = fill(path, method, "nope");
                let response = send(&admin, FULL, method, &uri, body.as_ref()).await;
                let status = response.status().as_u16();
                assert!(
                    responses.contains_key(&status.to_string()),
                    "{method} {uri}: undocumented {status}"
                );
                assert_eq!(status, 404, "{method} {uri}");
                let error: Value = response.json().await.unwrap();
                assert_eq!(error["error"]["code"], "not_found", "{error}");
            }

            // Read-only users: every change is a documented 403 with the JSON body.
            if method != "get" {
                let dir = tempfile::tempdir().unwrap();
                let admin = fixture(dir.path()).await;
                let uri = fill(path, method, "svc").replace("{id}", "1");
                let response = send(&admin, READONLY, method, &uri, body.as_ref()).await;
                assert_eq!(response.status(), 403, "{method} {uri}");
                assert!(responses.contains_key("403"));
                let error: Value = response.json().await.unwrap();
                assert_eq!(error["error"]["code"], "forbidden");
            }
        }
    }
    assert!(walked >= 28, "walked only {walked} operations");
    // Undocumented: 404 with the JSON body, and 405 for a wrong method.
    let response = send(&admin, FULL, "get", "/api/v1/pools", None).await;
    assert_eq!(response.status(), 404);
    let response = send(&admin, FULL, "patch", "/api/v1/services", None).await;
    assert_eq!(response.status(), 405);
}

/// A connection held open through `svc` to a new host `hold` of group `g` (the
/// other hosts admin-down), and its id.
async fn open_connection(admin: &Admin) -> (u64, tokio::net::TcpStream) {
    use txlb::Command;
    let hold = common::named_backend("hold", common::Hold::UntilClientCloses).await;
    if admin.handle.stats().host("svc", "g", "hold").is_none() {
        admin
            .handle
            .apply(Command::AddHost {
                service: "svc".into(),
                group: "g".into(),
                host: common::host("hold", hold, 1),
            })
            .await
            .unwrap();
    }
    let before = admin
        .handle
        .connections(None, None)
        .iter()
        .map(|c| c.id)
        .max()
        .unwrap_or(0);
    for h in ["a", "b"] {
        admin
            .handle
            .apply(Command::SetAdminDown {
                service: "svc".into(),
                group: "g".into(),
                host: h.into(),
                down: true,
            })
            .await
            .unwrap();
    }
    let (name, stream) = common::which_backend(admin.listener()).await;
    assert_eq!(name, "hold");
    let mut id = None;
    assert!(
        common::eventually(Duration::from_secs(5), || {
            id = admin
                .handle
                .connections(None, Some("hold"))
                .iter()
                .map(|c| c.id)
                .find(|id| *id > before);
            std::future::ready(id.is_some())
        })
        .await
    );
    (id.unwrap(), stream)
}

/// Whether the balancer closed `stream` (EOF or reset) within 5 s.
async fn closed_by_balancer(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn connections_are_listed_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let admin = fixture(dir.path()).await;
    let (id, mut stream) = open_connection(&admin).await;
    let list: Value = send(
        &admin,
        READONLY,
        "get",
        "/api/v1/connections?service=svc&host=hold",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["host"], "hold");
    let none: Value = send(&admin, FULL, "get", "/api/v1/connections?host=a", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none, serde_json::json!([]));
    let (status, page) = admin.get("/connections?service=svc").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("<td class=\"n\">{id}</td>")),
        "{page}"
    );
    assert!(page.contains("action=\"closeConnection\""), "{page}");
    // Idle, it parks within two sweeps; the list and the page say so.
    let parked = eventually(Duration::from_secs(5), || async {
        let list: Value = send(&admin, READONLY, "get", "/api/v1/connections", None)
            .await
            .json()
            .await
            .unwrap();
        list[0]["parked"] == true
    })
    .await;
    assert!(parked, "the idle connection parked");
    let (_, page) = admin.get("/connections").await;
    assert!(page.contains("idle: parked"), "{page}");
    let r = send(
        &admin,
        FULL,
        "delete",
        &format!("/api/v1/connections/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    assert!(
        closed_by_balancer(&mut stream).await,
        "closing from the API ends it"
    );
    let r = send(
        &admin,
        FULL,
        "delete",
        &format!("/api/v1/connections/{id}"),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    // The legacy call does the same.
    let (id, mut stream) = open_connection(&admin).await;
    let (status, text) = admin.get(&format!("/closeConnection?id={id}")).await;
    assert_eq!(status, 200, "{text}");
    assert!(closed_by_balancer(&mut stream).await);
}

#[tokio::test]
async fn drain_keeps_connections_until_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let admin = fixture(dir.path()).await;
    let (_, mut stream) = open_connection(&admin).await;
    admin.get("/hostAdminUp?service=svc&group=g&name=b").await;
    let (status, text) = admin.get("/drainHost?service=svc&group=g&name=hold").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("draining (1 open)"), "{text}");
    let (_, page) = admin.get("/running").await;
    assert!(page.contains("draining (1 open)"), "{page}");
    // No new connections; the established one continues.
    for _ in 0..3 {
        assert_eq!(common::which_backend(admin.listener()).await.0, "b");
    }
    assert_eq!(admin.handle.connections(None, Some("hold")).len(), 1);
    // With a deadline, what is left is closed then.
    let r = send(
        &admin,
        FULL,
        "post",
        "/api/v1/services/svc/groups/g/hosts/hold/drain?deadline=0.2",
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(closed_by_balancer(&mut stream).await, "cut at the deadline");
    let r = send(
        &admin,
        FULL,
        "post",
        "/api/v1/services/svc/groups/g/hosts/hold/drain?deadline=soon",
        None,
    )
    .await;
    assert_eq!(r.status(), 400);
    // The deadline may come in a JSON body instead; a body is never
    // ignored: a bad one, an unknown field, or a deadline given twice is
    // refused.
    let drain = "/api/v1/services/svc/groups/g/hosts/hold/drain";
    admin
        .get("/hostAdminUp?service=svc&group=g&name=hold")
        .await;
    let (_, mut stream) = open_connection(&admin).await;
    let body = serde_json::json!({"deadline": 0.2});
    let r = send(&admin, FULL, "post", drain, Some(&body)).await;
    assert_eq!(r.status(), 200);
    assert!(
        closed_by_balancer(&mut stream).await,
        "cut at the body's deadline"
    );
    for (path, body) in [
        (drain.to_string(), serde_json::json!({"seconds": 5})),
        (drain.to_string(), serde_json::json!({"deadline": "soon"})),
        (
            format!("{drain}?deadline=5"),
            serde_json::json!({"deadline": 5}),
        ),
    ] {
        let r = send(&admin, FULL, "post", &path, Some(&body)).await;
        assert_eq!(r.status(), 400, "{path} {body}");
    }
}

#[tokio::test]
async fn json_changes_reach_the_running_state() {
    let dir = tempfile::tempdir().unwrap();
    let admin = fixture(dir.path()).await;
    let body = serde_json::json!({"scheduler": "weighted"});
    let r = send(
        &admin,
        FULL,
        "put",
        "/api/v1/services/svc/groups/g/scheduler",
        Some(&body),
    )
    .await;
    assert_eq!(r.status(), 200);
    let group: Value = r.json().await.unwrap();
    assert_eq!(group["scheduler"], "weightr");
    assert_eq!(
        admin.handle.config().services[0].groups[0].scheduler.name(),
        "weightr"
    );
    let r = send(
        &admin,
        FULL,
        "post",
        "/api/v1/services/svc/groups/spare/enable",
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(admin.handle.config().services[0].enabled_group, "spare");
    let body = serde_json::json!({"scheduler": "nope"});
    let r = send(
        &admin,
        FULL,
        "put",
        "/api/v1/services/svc/groups/g/scheduler",
        Some(&body),
    )
    .await;
    assert_eq!(r.status(), 400);
    let error: Value = r.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scheduler")
    );
    let users: Value = send(&admin, FULL, "get", "/api/v1/users", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        users,
        serde_json::json!([{"name": "admin", "access": "full"}, {"name": "viewer", "access": "readonly"}])
    );
    assert!(!users.to_string().contains('$'), "no hashes");
}

#[tokio::test]
async fn events_stream_stats_and_changes() {
    let dir = tempfile::tempdir().unwrap();
    let admin = fixture(dir.path()).await;
    let mut events = send(&admin, READONLY, "get", "/api/v1/events", None).await;
    assert_eq!(events.status(), 200);
    let mut seen = String::new();
    while !seen.contains("event: stats") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"hosts\""), "{seen}");
    admin.get("/enableGroup?service=svc&group=spare").await;
    while !seen.contains("event: change") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("group-enabled"), "{seen}");
}

/// Event streams stay open: at most a quarter of the admin connections
/// serve them, so that a user (a read-only one too) opening many cannot take
/// every connection from the other requests.
#[tokio::test]
async fn event_streams_cannot_take_every_admin_connection() {
    let settings = AdminSettings {
        max_connections: 8,
        ..AdminSettings::default()
    };
    let admin = Admin::start(two_group_config().await, settings).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let stream = send(&admin, READONLY, "get", "/api/v1/events", None).await;
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let refused = send(&admin, READONLY, "get", "/api/v1/events", None).await;
    assert_eq!(refused.status(), 503);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("too many event streams")
    );
    let status = send(&admin, FULL, "get", "/api/v1/status", None).await;
    assert_eq!(status.status(), 200, "other requests are served");
    // A stream that ends frees its place.
    drop(streams.pop());
    let freed = common::eventually(Duration::from_secs(5), || async {
        send(&admin, READONLY, "get", "/api/v1/events", None)
            .await
            .status()
            == 200
    });
    assert!(freed.await);
}

#[tokio::test]
async fn metrics_public_only_when_configured() {
    let admin = Admin::start(two_group_config().await, AdminSettings::default()).await;
    let (status, _) = admin.call(None, Method::GET, "/metrics", None).await;
    assert_eq!(status, 401);
    let admin = Admin::start(
        two_group_config().await,
        AdminSettings {
            metrics_public: true,
            ..AdminSettings::default()
        },
    )
    .await;
    let (status, text) = admin.call(None, Method::GET, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE txlb_host_connections_total counter"),
        "{text}"
    );
    assert!(
        text.contains("txlb_host_state{service=\"svc\",group=\"g\",host=\"a\",state=\"up\"} 1"),
        "{text}"
    );
    let (status, _) = admin.call(None, Method::GET, "/running.txt", None).await;
    assert_eq!(status, 401, "only /metrics is public");
}

#[tokio::test]
async fn https_with_the_kept_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("lb.xml");
    let web = txlb::config::AdminWebConfig {
        listen: txlb::config::parse_listen_addr("127.0.0.1:0").unwrap(),
        enable: true,
        secure: true,
        refresh: Duration::from_secs(10),
        metrics_public: false,
        cert: None,
        key: None,
        allowed_hosts: Vec::new(),
        changes_require_post: false,
    };
    let mut fingerprints = Vec::new();
    for _restart in 0..2 {
        let settings = AdminSettings {
            tls: Some(txlb::admin::tls_server_config(&web, Some(&config_file)).unwrap()),
            ..AdminSettings::from_web(&web)
        };
        let admin = Admin::start(two_group_config().await, settings).await;
        assert!(admin.base.starts_with("https://"), "{}", admin.base);
        let (cert_path, _) = txlb::admin::certificate_paths(&config_file);
        let pem = std::fs::read(&cert_path).unwrap();
        fingerprints.push(pem.clone());
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        // Trusting exactly the kept certificate: the server presents it.
        let client = client_trusting(&[cert]);
        let response = client
            .get(format!("{}running.txt", admin.base))
            .basic_auth(FULL.0, Some(FULL.1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("service svc"));
        // A client that trusts nothing refuses the connection.
        let untrusting = client_trusting(&[]);
        assert!(untrusting.get(&admin.base).send().await.is_err());
        // Plain HTTP on the HTTPS port gets nowhere.
        let plain = admin.base.replace("https://", "http://");
        let answer = common::admin::client().get(&plain).send().await;
        assert!(answer.is_err() || answer.unwrap().status() != 200);
        admin.handle.shutdown(Duration::from_secs(1)).await;
    }
    assert_eq!(
        fingerprints[0], fingerprints[1],
        "same certificate after a restart"
    );
}
