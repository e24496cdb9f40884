//! Admin hardening over real sockets: request head and body size limits, slow
//! clients cut off after the client timeout without holding up others, security
//! headers, and no passwords or hashes in the log.

use crate::common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::admin::{Admin, FULL, two_group_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use txlb::admin::{AdminSettings, MAX_BODY_BYTES, MAX_HEADER_BYTES};

/// The client timeout the server runs with in these tests.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);

async fn admin() -> Admin {
    let settings = AdminSettings {
        client_timeout: CLIENT_TIMEOUT,
        // The raw requests below name the server `t`.
        allowed_hosts: vec!["t".into()],
        ..Default::default()
    };
    Admin::start(two_group_config().await, settings).await
}

fn addr(admin: &Admin) -> SocketAddr {
    admin
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

fn authorization() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", FULL.0, FULL.1));
    format!("Authorization: Basic {token}\r\n")
}

/// Everything the server sends until it closes the connection (at most 10 s).
async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `request` on a new connection and returns the status line's code.
async fn status_of(admin: &Admin, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr(admin)).await.unwrap();
    // The server may answer and close before it read everything.
    let _ = stream.write_all(request).await;
    let answer = read_all(&mut stream).await;
    answer
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
        .to_string()
}

#[tokio::test]
async fn request_heads_and_bodies_past_the_limits_are_refused() {
    let admin = admin().await;
    let auth = authorization();

    // A head just under the limit passes; one over it gets 431.
    let filler = "x".repeat(MAX_HEADER_BYTES / 2);
    let ok = format!(
        "GET /running.txt HTTP/1.1\r\nHost: t\r\n{auth}X-Filler: {filler}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(status_of(&admin, ok.as_bytes()).await, "200");
    let filler = "x".repeat(MAX_HEADER_BYTES + 1);
    let big = format!("GET /running.txt HTTP/1.1\r\nHost: t\r\n{auth}X-Filler: {filler}\r\n\r\n");
    assert_eq!(status_of(&admin, big.as_bytes()).await, "431");
    // Too many header lines.
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!("GET /running.txt HTTP/1.1\r\nHost: t\r\n{auth}{many}\r\n");
    assert_eq!(status_of(&admin, request.as_bytes()).await, "431");

    // A body over the limit: 413 from its Content-Length, nothing changed.
    let body = format!(
        "service=svc&group=g&name=c&ip=127.0.0.1:9&pad={}",
        "x".repeat(MAX_BODY_BYTES)
    );
    let (status, text) = admin.post("addHost", &body).await;
    assert_eq!(status, 413, "{text}");
    assert!(admin.handle.stats().host("svc", "g", "c").is_none());
    // The same over the JSON API, with its error body.
    let response = admin
        .client
        .post(format!("{}api/v1/services/svc/groups/g/hosts", admin.base))
        .basic_auth(FULL.0, Some(FULL.1))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"name\":\"c\",\"ip\":\"127.0.0.1:9\",\"x\":\"{}\"}}",
            "x".repeat(MAX_BODY_BYTES)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large");
    // Chunked, without a length: cut at the limit all the same.
    let mut request = format!(
        "POST /addHost HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..(MAX_BODY_BYTES / chunk.len() + 2) {
        write!(request, "{:x}\r\n", chunk.len()).unwrap();
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(status_of(&admin, &request).await, "413");

    // Within the limits, the server answers as usual.
    let (status, text) = admin
        .post("addHost", "service=svc&group=g&name=c&ip=127.0.0.1:9")
        .await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn slow_clients_are_cut_off_without_holding_up_others() {
    let admin = admin().await;
    let auth = authorization();

    // A head that never ends: the connection is closed after the timeout.
    let mut slow_head = TcpStream::connect(addr(&admin)).await.unwrap();
    slow_head
        .write_all(b"GET /running HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(addr(&admin)).await.unwrap();
    // A body that never ends: 408 after the timeout.
    let mut slow_body = TcpStream::connect(addr(&admin)).await.unwrap();
    slow_body
        .write_all(
            format!(
                "POST /addHost HTTP/1.1\r\nHost: t\r\n{auth}\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nservice=svc"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();

    // Meanwhile, others are served at once.
    let (status, _) = admin.get("running.txt").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < CLIENT_TIMEOUT);

    let answer = read_all(&mut slow_body).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        took >= CLIENT_TIMEOUT - Duration::from_millis(100) && took < CLIENT_TIMEOUT * 5,
        "slow body answered after {took:?}"
    );
    for (name, stream) in [("slow head", &mut slow_head), ("silent", &mut silent)] {
        let answer = read_all(stream).await;
        let took = started.elapsed();
        assert!(
            !answer.contains(" 200 "),
            "{name}: served after a partial head: {answer:?}"
        );
        assert!(
            took < CLIENT_TIMEOUT * 5,
            "{name}: still open after {took:?}"
        );
    }
}

/// The real binary's log at debug level (its own process: no other test's
/// subscriber in the way) while passwords cross the admin plane.
#[tokio::test]
async fn no_password_or_hash_reaches_the_log() {
    let backend = common::named_backend("a", common::Hold::Close).await;
    let users = common::admin::users();
    let user_lines: String = common::admin::user_lines();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    std::fs::write(
        &path,
        format!(
            "<config>\n  <service name=\"svc\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
             <group name=\"g\" scheduler=\"roundr\" enable=\"true\">\n      \
             <host name=\"a\" ip=\"{backend}\"/>\n    </group>\n  </service>\n  <admin>\n    \
             <web listen=\"127.0.0.1:0\" enable=\"true\"/>\n{user_lines}  </admin>\n</config>\n"
        ),
    )
    .unwrap();
    let txlb = common::binary::Txlb::start_logging(&path, 1, "debug");
    let base = txlb.logged("admin web server up", "url").await;
    let client = common::admin::client();
    let call = |user: &str, password: &str, path: &str| {
        client
            .get(format!("{base}{path}"))
            .basic_auth(user, Some(password))
            .send()
    };

    let wrong = "Wr0ng-pa55word";
    assert_eq!(
        call(FULL.0, wrong, "running.txt").await.unwrap().status(),
        401
    );
    let legacy_password = "Legacy-s3cret";
    let added = call(
        FULL.0,
        FULL.1,
        &format!("addUser?name=ops&password={legacy_password}&access=readonly"),
    )
    .await
    .unwrap();
    assert_eq!(added.status(), 200, "{:?}", added.text().await);
    let json_password = "Json-s3cret";
    let response = client
        .post(format!("{base}api/v1/users"))
        .basic_auth(FULL.0, Some(FULL.1))
        .json(&serde_json::json!({"name": "ops2", "password": json_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // A page and the API as the new user.
    assert_eq!(
        call("ops", legacy_password, "running")
            .await
            .unwrap()
            .status(),
        200
    );
    let hashes: String = call(FULL.0, FULL.1, "api/v1/users")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    txlb.wait_for_async("admin login failed", 0).await;
    txlb.wait_for_async("admin change", 0).await;
    let log = txlb.log_text();
    let mut secrets = vec![
        wrong.to_string(),
        FULL.1.to_string(),
        legacy_password.into(),
        json_password.into(),
    ];
    secrets.extend(users.iter().map(|u| u.password_hash.clone()));
    for secret in secrets {
        assert!(!log.contains(&secret), "{secret:?} in the log:\n{log}");
    }
    // Nor the hashes of the users added here, nor the Authorization header.
    for hash in hashes.split('"').filter(|s| s.starts_with('$')) {
        assert!(!log.contains(hash), "{hash:?} in the log:\n{log}");
    }
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", FULL.0, FULL.1));
    assert!(!log.contains(&token));
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let admin = admin().await;
    for (user, path) in [
        (Some(FULL), "running"),
        (Some(FULL), "api/v1/stats"),
        (Some(FULL), "running.txt"),
        (None, "running"),
        (Some(FULL), "no-such-page"),
    ] {
        let mut request = admin.client.get(format!("{}{path}", admin.base));
        if let Some((name, password)) = user {
            request = request.basic_auth(name, Some(password));
        }
        let response = request.send().await.unwrap();
        let h = response.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
    }
}
