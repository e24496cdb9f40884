//! The real `txlb` binary as a child process, the one harness of every test
//! binary: started on a configuration file (or an XML text, optionally under a
//! descriptor limit), killed on drop, its stderr collected so tests can wait for
//! log lines, its resident memory and descriptors read from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for a log line or for the process to stop.
const WAIT: Duration = Duration::from_secs(10);

/// A running `txlb run`.
pub struct Txlb {
    /// The process.
    pub child: Child,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The configuration's directory when the harness wrote it ([`Txlb::start_xml`]).
    dir: Option<tempfile::TempDir>,
}

impl Txlb {
    /// `txlb run --workers 1 --grace GRACE --config CONFIG`, logging at info.
    pub fn start(config: &Path, grace_secs: u32) -> Txlb {
        Txlb::start_logging(config, grace_secs, "info")
    }

    /// Writes `xml` to a temporary file and runs `txlb run` on it with one
    /// worker and a grace of 2 s; with `nofile`, under that descriptor limit.
    pub fn start_xml(xml: &str, nofile: Option<u64>) -> Txlb {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lb.xml");
        std::fs::write(&config, xml).unwrap();
        let command = match nofile {
            Some(n) => Txlb::command_with_nofile(&config, 1, 2, "info", n),
            None => Txlb::command(&config, 1, 2, "info"),
        };
        let mut txlb = Txlb::spawn(command);
        txlb.dir = Some(dir);
        txlb
    }

    /// [`Txlb::start`] with the log filter `TXLB_LOG=filter`.
    pub fn start_logging(config: &Path, grace_secs: u32, filter: &str) -> Txlb {
        Txlb::spawn(Txlb::command(config, 1, grace_secs, filter))
    }

    /// [`Txlb::start`] with `workers` workers.
    pub fn start_workers(config: &Path, grace_secs: u32, workers: u32) -> Txlb {
        Txlb::spawn(Txlb::command(config, workers, grace_secs, "info"))
    }

    /// The command line `txlb run --workers WORKERS --grace GRACE --config
    /// CONFIG` logging at `filter`, its stderr piped: for [`Txlb::spawn`], once
    /// a test has set what else it needs (e.g. a descriptor limit).
    pub fn command(config: &Path, workers: u32, grace_secs: u32, filter: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_txlb"));
        command
            .args([
                "run",
                "--workers",
                &workers.to_string(),
                "--grace",
                &grace_secs.to_string(),
                "--config",
            ])
            .arg(config)
            .env("TXLB_LOG", filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// [`Txlb::command`] whose process may open at most `nofile` descriptors
    /// (RLIMIT_NOFILE, set in the child before exec).
    pub fn command_with_nofile(
        config: &Path,
        workers: u32,
        grace_secs: u32,
        filter: &str,
        nofile: u64,
    ) -> Command {
        use std::os::unix::process::CommandExt as _;
        let mut command = Txlb::command(config, workers, grace_secs, filter);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }

    /// Runs `command` (a `txlb` command line with its stderr piped) and
    /// collects its log.
    pub fn spawn(mut command: Command) -> Txlb {
        let mut child = command.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Txlb {
            child,
            log,
            dir: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Log lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Log lines containing `needle`, once there are `expected` of them or 10 s
    /// passed: the child's log reaches the test through a pipe, a moment
    /// after what it logs has happened.
    pub async fn count_reaching(&self, needle: &str, expected: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        while self.count(needle) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.count(needle)
    }

    /// Resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Lines logged so far.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn find(&self, needle: &str, skip: usize) -> Option<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .skip(skip)
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// The first line containing `needle` after the first `skip` lines, waiting
    /// for it (blocking: for tests without a runtime).
    pub fn wait_for(&self, needle: &str, skip: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.find(needle, skip) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`Txlb::wait_for`] for async tests.
    pub async fn wait_for_async(&self, needle: &str, skip: usize) -> String {
        poll(&self.log, &format!("no {needle:?} in log"), || {
            self.find(needle, skip)
        })
        .await
    }

    /// The value after `key=` on the first line containing `needle`.
    pub async fn logged(&self, needle: &str, key: &str) -> String {
        value(&self.wait_for_async(needle, 0).await, key)
    }

    /// The bound address of the first listener, from the "listener up" line.
    pub fn listener(&self) -> SocketAddr {
        value(&self.wait_for("listener up", 0), "local")
            .parse()
            .unwrap()
    }

    /// Sends `signal` (e.g. "HUP") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.exit_status(Duration::from_secs(15))
            .expect("txlb did not stop on SIGTERM")
    }

    /// The exit status, waiting for it at most `within` (`None`: still running).
    pub fn exit_status(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most 10 s, without blocking the test's runtime) for the
    /// process to exit with a failure, then for its line containing `needle`
    /// (saying why); returns the line.
    pub async fn refused(&mut self, needle: &str) -> String {
        let status = poll(&self.log, "txlb did not refuse to start", || {
            self.child.try_wait().unwrap()
        })
        .await;
        assert!(!status.success(), "{}", self.log_text());
        // The log is read by a thread that may not have reached the last line.
        self.wait_for_async(needle, 0).await
    }
}

/// What `probe` finds, polling it every 10 ms (without blocking the
/// test's runtime) for at most 10 s; past that, panics with `failure` and
/// its `log`.
async fn poll<T>(
    log: &Mutex<Vec<String>>,
    failure: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{failure}:\n{}",
            log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn value(line: &str, key: &str) -> String {
    let value = line
        .split(&format!("{key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    value.split_whitespace().next().unwrap().to_string()
}

impl Drop for Txlb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of `/proc/PID/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A one-service XML configuration on 127.0.0.1:0 with `attrs` on `<service>`,
/// `group_attrs` on `<group>`, hosts given as (name, address, extra attributes),
/// and `extra` inside `<config>` (e.g. an `<admin>` block).
pub fn xml(
    attrs: &str,
    group_attrs: &str,
    hosts: &[(&str, SocketAddr, &str)],
    extra: &str,
) -> String {
    let hosts: String = hosts
        .iter()
        .map(|(name, addr, a)| format!("      <host name=\"{name}\" ip=\"{addr}\" {a}/>\n"))
        .collect();
    format!(
        "<config>\n  <service name=\"svc\" {attrs}>\n    <listen ip=\"127.0.0.1:0\"/>\n    \
         <group name=\"g\" scheduler=\"leastc\" enable=\"true\" {group_attrs}>\n{hosts}    </group>\n  \
         </service>\n{extra}</config>\n"
    )
}

/// Raises this process's soft descriptor limit to its hard limit (children
/// inherit it); returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        limit.rlim_cur
    }
}
