//! The real `txlb` binary as a child process for fault and soak tests: started
//! from an XML text (optionally under a lower or higher `ulimit -n`), its stderr
//! collected, its listener and admin addresses read from the log, its resident
//! memory read from `/proc`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TXLB: &str = env!("CARGO_BIN_EXE_txlb");

/// A running `txlb run`, killed on drop.
pub struct Txlb {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Txlb {
    /// Writes `xml` to a temporary file and runs `txlb run` on it with one data
    /// worker; with `nofile`, under `ulimit -n nofile`.
    pub fn start(xml: &str, nofile: Option<u64>) -> Txlb {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lb.xml");
        std::fs::write(&config, xml).unwrap();
        let mut command = match nofile {
            // `exec` keeps the pid: the child's pid is txlb's.
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(TXLB);
                c
            }
            None => Command::new(TXLB),
        };
        command
            .args(["run", "--workers", "1", "--grace", "2", "--config"])
            .arg(&config)
            .env("TXLB_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
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
            _dir: dir,
            config,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The value after `key=` on the first log line containing `needle`, waiting
    /// up to 10 s for it.
    pub fn logged(&self, needle: &str, key: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if let Some(line) = found {
                let value = line
                    .split(&format!("{key}="))
                    .nth(1)
                    .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
                return value.split_whitespace().next().unwrap().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The bound address of the first listener.
    pub fn listener(&self) -> SocketAddr {
        self.logged("listener up", "local").parse().unwrap()
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

    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
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
