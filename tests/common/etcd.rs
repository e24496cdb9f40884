//! A real etcd for the fleet tests: Debian's `etcd-server`, started on
//! loopback ports with a temporary data directory. Without it a test skips
//! (`etcd_or_skip!`); `scripts/test.sh` installs it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary, if installed.
pub fn etcd_binary() -> Option<PathBuf> {
    let installed = PathBuf::from("/usr/bin/etcd");
    if installed.exists() {
        return Some(installed);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("etcd"))
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An etcd member on two loopback ports, its data in a temporary directory;
/// stopped and started again on the same ports and data.
pub struct Etcd {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

impl Etcd {
    pub fn start(binary: PathBuf) -> Etcd {
        let mut etcd = Etcd {
            binary,
            dir: tempfile::tempdir().unwrap(),
            client: free_port(),
            peer: free_port(),
            child: None,
        };
        etcd.resume();
        etcd
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// Starts the member and waits (at most 20 s) until it answers. A first
    /// start whose ports another process took meanwhile (the member exits) moves
    /// to fresh ports; a restart keeps its ports.
    pub fn resume(&mut self) {
        let first = !self.dir.path().join("data").exists();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = self.spawn();
            // Ours answers and is still running a moment later (not another
            // test's member on a port we both picked).
            let mut alive = true;
            while !(self.answers() && {
                std::thread::sleep(Duration::from_millis(200));
                matches!(child.try_wait(), Ok(None))
            }) {
                if !matches!(child.try_wait(), Ok(None)) {
                    alive = false;
                    break;
                }
                assert!(Instant::now() < deadline, "etcd did not start");
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive {
                self.child = Some(child);
                return;
            }
            assert!(first && Instant::now() < deadline, "etcd exited at start");
            let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
            self.client = free_port();
            self.peer = free_port();
        }
    }

    fn spawn(&self) -> Child {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        Command::new(&self.binary)
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg(format!("--initial-cluster-token=txlb-test-{}", self.client))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd")
    }

    /// Whether etcd answers a status request (HTTP/1.0 over a plain socket).
    pub fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.client)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let request = "POST /v3/maintenance/status HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}";
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.0 200")
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
