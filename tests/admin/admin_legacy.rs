//! txLoadBalancer's web API over real HTTP: every call's happy path and one
//! refusal, checked against the running state and, for the calls that steer
//! traffic, against real connections through the balancer; and the access rules
//! (no credentials, wrong ones, throttling, read-only, cross-site posts).

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::admin::{Admin, FULL, READONLY, two_group_config};
use common::*;
use reqwest::Method;
use txlb::HostHealth;
use txlb::admin::AdminSettings;

async fn names(admin: &Admin, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(which_backend(admin.listener()).await.0);
    }
    seen
}

fn distinct(v: &[String]) -> HashSet<&str> {
    v.iter().map(String::as_str).collect()
}

async fn start() -> Admin {
    Admin::start(two_group_config().await, AdminSettings::default()).await
}

#[tokio::test]
async fn reading_calls() {
    let admin = start().await;
    for path in ["/", "/running", "/all"] {
        let (status, page) = admin.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            page.contains("Service svc") && page.contains("spare"),
            "{path}"
        );
    }
    let (status, text) = admin.get("/running.txt").await;
    assert_eq!(status, 200);
    assert!(text.contains("service svc enabled=g"), "{text}");
    assert!(text.contains("host s1 ip=127.0.0.1:"), "{text}");
    let (status, xml) = admin.get("/running.xml").await;
    assert_eq!(status, 200);
    let reloaded = txlb::config::Config::from_xml_str(&xml).unwrap();
    assert_eq!(reloaded.services, admin.handle.config().services);
    admin
        .get("/addHost?service=svc&group=spare&name=s2&ip=127.0.0.1:9")
        .await;
    let (status, boot) = admin.get("/config.xml").await;
    assert_eq!(status, 200);
    // By its name attribute: a bare "s2" may stand in a password hash.
    assert!(
        !boot.contains("name=\"s2\""),
        "config.xml is the boot configuration"
    );
    assert!(admin.get("/running.xml").await.1.contains("\"s2\""));
    // Refusal: the read pages are GET only.
    let (status, _) = admin
        .call(Some(FULL), Method::POST, "/running.txt", Some(""))
        .await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn add_host_then_traffic_reaches_it() {
    let admin = start().await;
    let c = named_backend("c", Hold::Close).await;
    let (status, text) = admin
        .get(&format!(
            "/addHost?service=svc&group=g&name=c&ip={c}&weight=2"
        ))
        .await;
    assert_eq!((status, text.starts_with("OK")), (200, true), "{text}");
    let h = admin.handle.stats();
    let host = h.host("svc", "g", "c").unwrap();
    assert_eq!(
        (host.weight, host.address.as_str()),
        (2, c.to_string().as_str())
    );
    let seen = names(&admin, 6).await;
    assert_eq!(distinct(&seen), HashSet::from(["a", "b", "c"]), "{seen:?}");
    // Refusal: the same name again.
    let (status, text) = admin
        .get(&format!("/addHost?service=svc&group=g&name=c&ip={c}"))
        .await;
    assert_eq!(status, 409, "{text}");
    assert_eq!(text.trim().lines().count(), 1);
}

#[tokio::test]
async fn del_host_and_del_all_hosts() {
    let admin = start().await;
    let (status, text) = admin.post("/delHost", "service=svc&group=g&name=a").await;
    assert_eq!(status, 200, "{text}");
    assert!(admin.handle.stats().host("svc", "g", "a").is_none());
    assert_eq!(distinct(&names(&admin, 3).await), HashSet::from(["b"]));
    // Refusal: the last host of the enabled group.
    let (status, text) = admin.get("/delHost?service=svc&group=g&name=b").await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("last host"), "{text}");

    let (status, text) = admin.get("/delAllHosts?service=svc&group=spare").await;
    assert_eq!(status, 200, "{text}");
    let config = admin.handle.config();
    assert!(config.services[0].groups[1].hosts.is_empty());
    // Refusal: the enabled group.
    let (status, text) = admin.get("/delAllHosts?service=svc&group=g").await;
    assert_eq!(status, 409, "{text}");
}

#[tokio::test]
async fn enable_group_switches_traffic() {
    let admin = start().await;
    assert_eq!(distinct(&names(&admin, 4).await), HashSet::from(["a", "b"]));
    let (status, text) = admin.get("/enableGroup?service=svc&group=spare").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(admin.handle.config().services[0].enabled_group, "spare");
    assert_eq!(distinct(&names(&admin, 4).await), HashSet::from(["s1"]));
    // Refusal: no such group.
    let (status, text) = admin.get("/enableGroup?service=svc&group=nope").await;
    assert_eq!(status, 404, "{text}");
}

#[tokio::test]
async fn admin_down_and_up_steer_traffic() {
    let admin = start().await;
    let (status, text) = admin.get("/hostAdminDown?service=svc&group=g&name=a").await;
    assert_eq!(status, 200, "{text}");
    let health = |admin: &Admin| {
        admin
            .handle
            .stats()
            .host("svc", "g", "a")
            .unwrap()
            .stats
            .health
    };
    assert_eq!(health(&admin), HostHealth::AdminDown);
    assert_eq!(distinct(&names(&admin, 6).await), HashSet::from(["b"]));
    let (status, _) = admin
        .post("/hostAdminUp", "service=svc&group=g&name=a")
        .await;
    assert_eq!(status, 200);
    assert_eq!(health(&admin), HostHealth::Up);
    assert_eq!(distinct(&names(&admin, 4).await), HashSet::from(["a", "b"]));
    // Refusal: unknown host.
    for call in ["hostAdminDown", "hostAdminUp"] {
        let (status, _) = admin
            .get(&format!("/{call}?service=svc&group=g&name=zz"))
            .await;
        assert_eq!(status, 404, "{call}");
    }
}

#[tokio::test]
async fn change_scheduler_new_group_del_group() {
    let admin = start().await;
    let (status, text) = admin
        .get("/changeScheduler?service=svc&group=g&scheduler=leastconns")
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        admin.handle.stats().services[0].groups[0].scheduler,
        "leastc"
    );
    let (status, text) = admin
        .get("/changeScheduler?service=svc&group=g&scheduler=fastest")
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("\"scheduler\""), "{text}");

    let (status, text) = admin
        .get("/newGroup?service=svc&group=blue&scheduler=weightr")
        .await;
    assert_eq!(status, 200, "{text}");
    let config = admin.handle.config();
    let blue = config.services[0].groups.iter().find(|g| g.name == "blue");
    assert_eq!(blue.unwrap().scheduler.name(), "weightr");
    let (status, text) = admin.get("/newGroup?group=red").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("\"service\""), "{text}");

    let (status, text) = admin.get("/delGroup?service=svc&group=blue").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        !admin.handle.config().services[0]
            .groups
            .iter()
            .any(|g| g.name == "blue")
    );
    let (status, text) = admin.get("/delGroup?service=svc&group=g").await;
    assert_eq!(status, 409, "{text}");
}

#[tokio::test]
async fn add_user_and_del_user() {
    let admin = start().await;
    let (status, text) = admin
        .post("/addUser", "name=ops&password=p%40ss&access=readonly")
        .await;
    assert_eq!(status, 200, "{text}");
    let users = admin.handle.config().admin.unwrap().users;
    let ops = users.iter().find(|u| u.name == "ops").unwrap();
    assert!(ops.password_hash.starts_with("$6$"));
    assert!(txlb::admin::verify_password("p@ss", &ops.password_hash));
    // The new user can log in, read-only.
    let (status, _) = admin
        .call(Some(("ops", "p@ss")), Method::GET, "/running.txt", None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = admin
        .call(Some(("ops", "p@ss")), Method::GET, "/closeLog", None)
        .await;
    assert_eq!(status, 403);
    let (status, text) = admin.get("/addUser?name=ops&password=x").await;
    assert_eq!(status, 409, "{text}");

    let (status, text) = admin.get("/delUser?name=ops").await;
    assert_eq!(status, 200, "{text}");
    let (status, _) = admin
        .call(Some(("ops", "p@ss")), Method::GET, "/running.txt", None)
        .await;
    assert_eq!(status, 401, "a removed user cannot log in");
    let (status, text) = admin.get("/delUser?name=ops").await;
    assert_eq!(status, 404, "{text}");
}

#[tokio::test]
async fn new_service_opens_a_port_that_load_balances() {
    let admin = start().await;
    let x = named_backend("x", Hold::Close).await;
    let y = named_backend("y", Hold::Close).await;
    let (status, text) = admin
        .get(&format!(
            "/newService?service=web2&listen=127.0.0.1:0&name=x&ip={x}&scheduler=roundr"
        ))
        .await;
    assert_eq!(status, 200, "{text}");
    let port = admin.handle.local_addr("web2", None).unwrap();
    assert!(text.contains(&port.to_string()), "{text}");
    admin
        .get(&format!("/addHost?service=web2&group=main&name=y&ip={y}"))
        .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(which_backend(port).await.0);
    }
    assert_eq!(distinct(&seen), HashSet::from(["x", "y"]), "{seen:?}");
    // Refusal: a port already in use is a clear error.
    let busy = admin.listener();
    let (status, text) = admin
        .get(&format!("/newService?service=web3&listen={busy}"))
        .await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("address already in use"), "{text}");
    assert!(admin.handle.local_addr("web3", None).is_none());
}

#[tokio::test]
async fn listeners_and_services_come_and_go() {
    let admin = start().await;
    let (status, text) = admin
        .get("/addListener?service=svc&listen=127.0.0.2:0")
        .await;
    assert_eq!(status, 200, "{text}");
    let second = admin
        .handle
        .listeners()
        .into_iter()
        .find(|l| l.configured == "127.0.0.2:0")
        .unwrap();
    assert_eq!(which_backend(second.local).await.0.len(), 1);
    let (status, _) = admin
        .get("/delListener?service=svc&listen=127.0.0.2:0")
        .await;
    assert_eq!(status, 200);
    assert_eq!(admin.handle.listeners().len(), 1);
    let (status, text) = admin
        .get("/delListener?service=svc&listen=127.0.0.1:0")
        .await;
    assert_eq!(status, 409, "last listener: {text}");
    let (status, _) = admin.get("/delService?service=svc").await;
    assert_eq!(status, 200);
    assert!(admin.handle.stats().services.is_empty());
    let (status, _) = admin.get("/delService?service=svc").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn retry_host_probes_now() {
    let admin = start().await;
    let closed = closed_port();
    admin
        .get(&format!(
            "/addHost?service=svc&group=spare&name=dead&ip={closed}"
        ))
        .await;
    let (status, text) = admin
        .get("/retryHost?service=svc&group=spare&host=dead")
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("did not answer"), "{text}");
    let dead = admin.handle.stats();
    let dead = dead.host("svc", "spare", "dead").unwrap();
    assert_eq!(dead.stats.health, HostHealth::Bad);
    assert!(dead.stats.bad.is_some());
    // A host that answers is in rotation.
    let (status, text) = admin
        .get("/retryHost?service=svc&group=spare&host=s1")
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("answered"), "{text}");
    let (status, _) = admin
        .get("/retryHost?service=svc&group=spare&host=zz")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn close_log_reopens_through_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txlb.log");
    let log = txlb::logging::LogFile::open(&path).unwrap();
    let mut settings = AdminSettings::default();
    let hook_log = log.clone();
    settings.reopen_log = Some(Arc::new(move || hook_log.reopen()));
    let admin = Admin::start(two_group_config().await, settings).await;
    std::fs::rename(&path, dir.path().join("txlb.log.1")).unwrap();
    let (status, text) = admin.get("/closeLog").await;
    assert_eq!(status, 200, "{text}");
    assert!(path.exists(), "a fresh log file is open");

    // Refusal: the hook fails (the reason is logged, not shown).
    let settings = AdminSettings {
        reopen_log: Some(Arc::new(|| Err(std::io::Error::other("disk on fire")))),
        ..AdminSettings::default()
    };
    let admin = Admin::start(two_group_config().await, settings).await;
    let (status, text) = admin.get("/closeLog").await;
    assert_eq!(status, 500, "{text}");
    assert!(!text.contains("disk on fire"), "{text}");
}

#[tokio::test]
async fn save_config_writes_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.xml");
    let mut config = two_group_config().await;
    config.source = Some(path.clone());
    let original = config.to_xml();
    std::fs::write(&path, &original).unwrap();
    let (text, boot) = txlb::config::writeback::load(&path).unwrap();
    let save = txlb::config::writeback::WriteBack::new(&path, text, boot);
    let settings = AdminSettings {
        save_config: Some(Arc::new(move |running: &txlb::config::Config| {
            save.save_reply(running)
        })),
        ..AdminSettings::default()
    };
    let admin = Admin::start(config, settings).await;
    admin
        .get("/addHost?service=svc&group=spare&name=s2&ip=127.0.0.1:9")
        .await;
    let (status, text) = admin.post("/saveConfig", "").await;
    assert_eq!(status, 200, "{text}");
    let saved = txlb::config::Config::from_path(&path).unwrap();
    assert_eq!(saved.services, admin.handle.config().services);
    assert_eq!(saved.admin, admin.handle.config().admin);

    let previous = std::fs::read_to_string(dir.path().join("lb.xml.bak")).unwrap();
    assert_eq!(previous, original, "the previous file is lb.xml.bak");

    // Refusal: the file was edited on disk since; it is not overwritten.
    std::fs::write(&path, "<config/>\n").unwrap();
    admin
        .get("/addHost?service=svc&group=spare&name=s3&ip=127.0.0.1:9")
        .await;
    let (status, text) = admin.get("/saveConfig").await;
    assert_eq!(status, 409, "{text}");
    assert!(
        text.contains("edited on disk since it was loaded"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "<config/>\n");
}

/// Every changing call of the legacy API, with parameters that would succeed.
const CHANGES: &[&str] = &[
    "addHost?service=svc&group=g&name=n&ip=127.0.0.1:9",
    "delHost?service=svc&group=g&name=a",
    "delAllHosts?service=svc&group=spare",
    "enableGroup?service=svc&group=spare",
    "changeScheduler?service=svc&group=g&scheduler=leastc",
    "addUser?name=u&password=p",
    "delUser?name=admin",
    "newService?service=n&listen=127.0.0.1:0",
    "delService?service=svc",
    "addListener?service=svc&listen=127.0.0.2:0",
    "delListener?service=svc&listen=127.0.0.1:0",
    "newGroup?service=svc&group=n",
    "delGroup?service=svc&group=spare",
    "retryHost?service=svc&group=g&host=a",
    "hostAdminDown?service=svc&group=g&name=a",
    "hostAdminUp?service=svc&group=g&name=a",
    "drainHost?service=svc&group=g&name=a&deadline=1",
    "closeConnection?id=1",
    "closeLog",
    "saveConfig",
];

#[tokio::test]
async fn readonly_gets_403_on_every_change_and_reads_everything() {
    let admin = start().await;
    let before = (admin.handle.config(), admin.handle.stats());
    for call in CHANGES {
        for method in [Method::GET, Method::POST] {
            let (status, text) = admin.call(Some(READONLY), method.clone(), call, None).await;
            assert_eq!(status, 403, "{method} {call}: {text}");
            assert!(text.contains("read-only"), "{text}");
        }
    }
    assert_eq!((admin.handle.config(), admin.handle.stats()), before);
    for page in [
        "/",
        "/running.txt",
        "/running.xml",
        "/config.xml",
        "/diff",
        "/metrics",
        "/hostCheck?service=svc&group=g&host=a",
    ] {
        let (status, _) = admin.call(Some(READONLY), Method::GET, page, None).await;
        assert_eq!(status, 200, "{page}");
    }
    // hostCheck is a read: a missing parameter or an unknown host is named.
    let (status, text) = admin
        .call(
            Some(READONLY),
            Method::GET,
            "/hostCheck?service=svc&group=g",
            None,
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("missing parameter host"), "{text}");
    let (status, text) = admin
        .call(
            Some(READONLY),
            Method::GET,
            "/hostCheck?service=svc&group=g&name=nope",
            None,
        )
        .await;
    assert_eq!(status, 404, "{text}");
    // The walk above covers every call the server counts as a change.
    let (status, _) = admin
        .call(Some(READONLY), Method::GET, "/api/v1/services", None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn des_crypt_users_log_in() {
    // The read-only user's hash is traditional DES, like the sample configuration's.
    let admin = start().await;
    let (status, _) = admin
        .call(Some(READONLY), Method::GET, "/running.txt", None)
        .await;
    assert_eq!(status, 200);
    // The sample file's hash has the same form and is accepted by the reader.
    let fixture = format!(
        "{}/tests/fixtures/txlb-config.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let sample = txlb::config::Config::from_path(fixture.as_ref()).unwrap();
    let hash = &sample.admin.unwrap().users[0].password_hash;
    assert_eq!(hash, "..xpoEyRReGzk");
    assert_eq!(
        pwhash::unix::crypt("anything", hash).unwrap().len(),
        13,
        "a DES hash with salt '..'"
    );
    assert!(!txlb::admin::verify_password("anything", hash));
}

#[tokio::test]
async fn no_or_wrong_credentials_get_401_then_429() {
    let admin = start().await;
    let response = admin
        .client
        .get(format!("{}running", admin.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    for call in CHANGES {
        let (status, _) = admin.call(None, Method::GET, call, None).await;
        assert_eq!(status, 401, "{call}");
    }
    for _ in 0..txlb::admin::MAX_FAILURES {
        let (status, _) = admin
            .call(Some((FULL.0, "wrong")), Method::GET, "/running", None)
            .await;
        assert_eq!(status, 401);
    }
    // Throttled now, even with the right password.
    let (status, text) = admin.get("/running.txt").await;
    assert_eq!(status, 429, "{text}");
}

#[tokio::test]
async fn cross_site_form_posts_are_refused() {
    let admin = start().await;
    let response = admin
        .client
        .post(format!("{}hostAdminDown", admin.base))
        .basic_auth(FULL.0, Some(FULL.1))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("service=svc&group=g&name=a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        admin
            .handle
            .stats()
            .host("svc", "g", "a")
            .unwrap()
            .stats
            .health,
        HostHealth::Up
    );
    // The page's own form post (same origin) goes through and comes back.
    let host = admin
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let response = admin
        .client
        .post(format!("{}hostAdminDown", admin.base))
        .basic_auth(FULL.0, Some(FULL.1))
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_page=1&service=svc&group=g&name=a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        admin
            .handle
            .stats()
            .host("svc", "g", "a")
            .unwrap()
            .stats
            .health,
        HostHealth::AdminDown
    );
}

#[tokio::test]
async fn no_users_only_on_loopback() {
    let mut config = two_group_config().await;
    config.admin = None;
    let handle = txlb::Balancer::start(config).await.unwrap();
    let public = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = txlb::admin::start(handle.clone(), AdminSettings::default(), public).await;
    assert!(matches!(
        refused,
        Err(txlb::admin::AdminError::NoUsersOnPublicAddress(_))
    ));
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = txlb::admin::start(handle.clone(), AdminSettings::default(), local)
        .await
        .unwrap();
    let status = common::admin::client()
        .get(format!("{}running.txt", server.url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "open on loopback without users");
    // The server stops with the balancer.
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let waiter = tokio::spawn(async move {
        server.stopped().await;
        flag.store(true, Ordering::SeqCst);
    });
    handle.shutdown(Duration::from_secs(1)).await;
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(stopped.load(Ordering::SeqCst));
}
