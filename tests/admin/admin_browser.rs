//! A real browser on the admin page: headless Chromium driven over WebDriver
//! (chromedriver, through `fantoccini`) logs in with basic auth, watches the
//! host counters change under real traffic without reloading (server-sent
//! events), clicks admin-down on a host, and the JSON API and new connections
//! confirm the host gets no more. A screenshot of the page is kept as
//! `target/admin-page.png`. At 1280×800 with a bad host's long reason nothing is
//! clipped or scrolled (`target/admin-page-1280.png`), the drain box says it takes
//! seconds, and every time shown is UTC, 24-hour.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/test.sh`); without them the test
//! says so and passes.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::admin::{Admin, FULL, two_group_config};
use common::*;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use txlb::admin::AdminSettings;

/// Longest the whole browser session may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for one thing to appear in the page.
const WAIT: Duration = Duration::from_secs(20);

/// An executable on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver and a Chromium binary, when both are installed.
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let driver = which("chromedriver")?;
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| which(name))?;
    Some((driver, chromium))
}

/// chromedriver in its own process group (and the Chromium it starts, with a
/// fresh profile directory); everything is killed on drop, also when the test
/// fails.
struct Browser {
    driver: Child,
    profile: tempfile::TempDir,
    port: u16,
}

impl Browser {
    async fn start(driver: &Path) -> Browser {
        use std::os::unix::process::CommandExt as _;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let browser = Browser {
            driver: child,
            profile: tempfile::tempdir().unwrap(),
            port,
        };
        let status = format!("{}status", browser.url());
        let http = common::admin::client();
        let ready = eventually(Duration::from_secs(15), || {
            let (http, status) = (http.clone(), status.clone());
            async move {
                match http.get(status).send().await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(ready, "chromedriver did not come up on port {port}");
        browser
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// A WebDriver session with headless Chromium on a fresh profile.
    async fn session(&self, chromium: &Path) -> Client {
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url())
            .await
            .expect("a WebDriver session with headless Chromium")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A Chromium process that left the group still names our profile.
        let profile = self.profile.path().to_string_lossy().into_owned();
        for pid in processes_mentioning(&profile) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Ids of processes whose command line contains `needle` (from `/proc`).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// The page's row of host `name` in group `g` of service `svc`.
async fn host_row(page: &Client, name: &str) -> Element {
    let key = format!("svc\u{1f}g\u{1f}{name}");
    for row in page.find_all(Locator::Css("tr[data-host]")).await.unwrap() {
        if row.attr("data-host").await.unwrap().as_deref() == Some(key.as_str()) {
            return row;
        }
    }
    panic!("no row for host {name} on the page");
}

/// The text of the cell `k` (`total`, `open`, `state`, …) of host `name`'s row.
async fn cell(page: &Client, name: &str, k: &str) -> String {
    let row = host_row(page, name).await;
    let selector = format!("[data-k=\"{k}\"]");
    row.find(Locator::Css(&selector))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Host `name` of group `g` through the JSON API.
async fn api_host(admin: &Admin, name: &str) -> Value {
    let (status, body) = admin
        .get(&format!("api/v1/services/svc/groups/g/hosts/{name}"))
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Where the screenshot is kept: `target/admin-page.png`.
fn screenshot_path() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp`.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("admin-page.png")
}

#[tokio::test]
async fn chromium_logs_in_sees_live_counters_and_sets_a_host_admin_down() {
    let Some((driver, chromium)) = browser_binaries() else {
        eprintln!(
            "SKIPPED: chromium and chromedriver are not both installed \
             (Debian: apt-get install chromium chromium-driver; scripts/test.sh does)"
        );
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, browse(&driver, &chromium))
        .await
        .expect("the browser test finished in time");
}

async fn browse(driver: &Path, chromium: &Path) {
    let settings = AdminSettings {
        refresh: Duration::from_secs(1),
        ..Default::default()
    };
    let admin = Admin::start(two_group_config().await, settings).await;
    let listener = admin.listener();
    let browser = Browser::start(driver).await;
    let page = browser.session(chromium).await;

    // Logging in: basic-auth credentials in the URL of the first navigation;
    // Chromium keeps them for the origin (events, form posts).
    let base = admin.base.trim_start_matches("http://");
    page.goto(&format!("http://{}:{}@{base}running", FULL.0, FULL.1))
        .await
        .unwrap();
    let title = page.title().await.unwrap();
    assert_eq!(title, "txlb: running");
    for name in ["a", "b"] {
        assert_eq!(cell(&page, name, "state").await, "up");
    }
    assert_eq!(cell(&page, "a", "total").await, "0");
    let live = page.find(Locator::Id("live")).await.unwrap();
    assert!(
        wait_until(|| async { live.text().await.unwrap().starts_with("live, updated") }).await,
        "the page never got a live update"
    );
    // Marks this page load: a reload would lose it.
    page.execute("window.txlbMark = 'same page'; return true;", vec![])
        .await
        .unwrap();

    // Real connections through the balancer while the page is open.
    let traffic = Traffic::start(listener);
    assert!(
        wait_until(|| async {
            let a = cell(&page, "a", "total").await.parse::<u64>().unwrap_or(0);
            let b = cell(&page, "b", "total").await.parse::<u64>().unwrap_or(0);
            a > 0 && b > 0
        })
        .await,
        "the counters did not change on the page under traffic"
    );
    let mark = page
        .execute("return window.txlbMark || null;", vec![])
        .await
        .unwrap();
    assert_eq!(
        mark,
        json!("same page"),
        "the page reloaded instead of updating"
    );
    traffic.stop().await;

    // Admin-down on host a, with the page's own button.
    host_row(&page, "a")
        .await
        .find(Locator::Css("form[action=\"hostAdminDown\"] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        wait_until(|| async {
            page.current_url()
                .await
                .is_ok_and(|u| u.query().is_some_and(|q| q.contains("msg=OK")))
        })
        .await,
        "no confirmation after clicking admin-down"
    );
    let flash = page.find(Locator::Css("p.flash")).await.unwrap();
    assert!(flash.text().await.unwrap().starts_with("OK"));
    assert_eq!(cell(&page, "a", "state").await, "admin-down");
    assert_eq!(cell(&page, "b", "state").await, "up");

    // The API agrees, and new connections all go to b.
    let before = api_host(&admin, "a").await;
    assert_eq!(before["health"], "admin-down", "{before}");
    for _ in 0..10 {
        assert_eq!(which_backend(listener).await.0, "b");
    }
    let after = api_host(&admin, "a").await;
    assert_eq!(after["total"], before["total"], "a got new connections");

    // The page, for the record, once the live counters caught up.
    let b_total = api_host(&admin, "b").await["total"].as_u64().unwrap();
    wait_until(|| async { cell(&page, "b", "total").await == b_total.to_string() }).await;
    let png = page.screenshot().await.unwrap();
    let path = screenshot_path();
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot of the admin page: {}", path.display());
    assert!(png.starts_with(b"\x89PNG"));

    page.close().await.unwrap();
    drop(browser);
}

/// A reason as long as real ones get (a name, an address, the system's words).
const LONG_REASON: &str = "heartbeat: connect to backend-with-a-rather-long-name.eu-west-3.\
    internal.example.com:8443 (10.128.217.44:8443) failed: Connection timed out (os error \
    110) after 3 s; the previous probe said: Connection reset by peer (os error 104)";

/// Marks every host named `bad` of a group bad with [`LONG_REASON`] whenever its
/// snapshot is built (an application's scheduler; it picks the first candidate).
fn marking_scheduler(hosts: &txlb::scheduler::Hosts) -> Box<dyn txlb::scheduler::Scheduler> {
    #[derive(Debug)]
    struct First;
    impl txlb::scheduler::Scheduler for First {
        fn pick(&self, candidates: &txlb::scheduler::Candidates<'_>) -> Option<usize> {
            (0..candidates.hosts().len()).find(|&i| candidates.is_candidate(i))
        }
    }
    for h in hosts.iter().filter(|h| &*h.name == "bad") {
        h.stats.mark_bad(LONG_REASON);
    }
    Box::new(First)
}

#[tokio::test]
async fn the_page_fits_1280_px_with_a_long_reason_and_one_time_format() {
    let Some((driver, chromium)) = browser_binaries() else {
        eprintln!("SKIPPED: chromium and chromedriver are not both installed");
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, fits(&driver, &chromium))
        .await
        .expect("the browser test finished in time");
}

async fn fits(driver: &Path, chromium: &Path) {
    let mut config = two_group_config().await;
    let group = &mut config.services[0].groups[0];
    group.scheduler = txlb::scheduler::SchedulerKind::Custom("marking");
    let mut bad = group.hosts[0].clone();
    bad.name = "bad".into();
    bad.address.port = 1;
    // A long name and a long address widen their columns too.
    let mut long = group.hosts[0].clone();
    long.name = "backend-with-a-long-name-in-eu-west-3b".into();
    long.address.host = "0000:0000:0000:0000:0000:0000:0000:0001".into();
    group.hosts.extend([bad, long]);
    let handle = txlb::Balancer::builder(config)
        .scheduler("marking", marking_scheduler)
        .start()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = AdminSettings {
        refresh: Duration::from_secs(1),
        ..Default::default()
    };
    let server = txlb::admin::start(handle.clone(), settings, listener)
        .await
        .unwrap();
    let browser = Browser::start(driver).await;
    let page = browser.session(chromium).await;
    page.set_window_size(1280, 800).await.unwrap();
    let base = server.url();
    let base = base.trim_start_matches("http://");
    page.goto(&format!("http://{}:{}@{base}running", FULL.0, FULL.1))
        .await
        .unwrap();
    assert_eq!(cell(&page, "bad", "state").await, "bad");
    assert!(
        cell(&page, "bad", "detail")
            .await
            .contains("Connection reset by peer")
    );
    let live = page.find(Locator::Id("live")).await.unwrap();
    assert!(
        wait_until(|| async { live.text().await.unwrap().starts_with("live, updated") }).await,
        "the page never got a live update"
    );

    // Nothing wider than the window: no page scroll, no service box scrolled,
    // and every host row's actions inside the viewport.
    let layout = page
        .execute(
            "var w=document.documentElement.clientWidth, out=[];\
             if(document.documentElement.scrollWidth>w){out.push('page '+document.documentElement.scrollWidth+' > '+w);}\
             document.querySelectorAll('section.service').forEach(function(s,i){\
               if(s.scrollWidth>s.clientWidth+1){out.push('section '+i+' '+s.scrollWidth+' > '+s.clientWidth);}});\
             document.querySelectorAll('tr[data-host] td:last-child button').forEach(function(b){\
               var r=b.getBoundingClientRect(); if(r.right>w){out.push(b.textContent+' at '+r.right+' > '+w);}});\
             var t=document.querySelector('section.service table'), s=t.closest('section');\
             return {width:window.innerWidth, clipped:out, slack:s.clientWidth-t.getBoundingClientRect().width};",
            vec![],
        )
        .await
        .unwrap();
    let png = page.screenshot().await.unwrap();
    let path = screenshot_path().with_file_name("admin-page-1280.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot at 1280×800: {}", path.display());
    eprintln!("layout at 1280 px: {layout}");
    assert_eq!(layout["width"], json!(1280), "{layout}");
    assert_eq!(layout["clipped"], json!([]), "{layout}");

    // The drain box says what it takes; every time shown is UTC, 24-hour.
    let drain = host_row(&page, "a")
        .await
        .find(Locator::Css(
            "form[action=\"drainHost\"] input[name=\"deadline\"]",
        ))
        .await
        .unwrap();
    let placeholder = drain.attr("placeholder").await.unwrap().unwrap_or_default();
    let label = drain.attr("aria-label").await.unwrap().unwrap_or_default();
    assert!(placeholder.contains("seconds"), "{placeholder:?}");
    assert!(
        label.contains("drain") && label.contains("seconds"),
        "{label:?}"
    );
    let live = live.text().await.unwrap();
    let detail = cell(&page, "bad", "detail").await;
    for text in [&live, &detail] {
        assert!(text.contains(" UTC"), "{text}");
        assert!(!text.contains("AM") && !text.contains("PM"), "{text}");
    }
    let stamp = |text: &str| -> Vec<String> {
        let at = text.find(" UTC").unwrap();
        text[..at].rsplit(' ').take(2).map(str::to_string).collect()
    };
    // `YYYY-MM-DD HH:MM:SS UTC` in both.
    for text in [&live, &detail] {
        let parts = stamp(text);
        assert_eq!(parts[0].len(), 8, "{text}");
        assert_eq!(parts[1].len(), 10, "{text}");
    }
    page.close().await.unwrap();
    drop(browser);
    handle.shutdown(Duration::from_secs(1)).await;
}

/// Polls `condition` every 100 ms for up to [`WAIT`].
async fn wait_until<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connections through the balancer, one every 50 ms, until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u32>,
}

impl Traffic {
    fn start(listener: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut made = 0;
            while !flag.load(Ordering::Relaxed) {
                let (name, _stream) = which_backend(listener).await;
                assert!(name == "a" || name == "b", "{name}");
                made += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            made
        });
        Traffic { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let made = self.task.await.unwrap();
        assert!(made > 0);
    }
}
