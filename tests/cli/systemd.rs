//! The real `txlb` binary under systemd's protocols, with systemd played by the
//! test: readiness, reload, stop and watchdog notifications on a `NOTIFY_SOCKET`,
//! socket activation through `LISTEN_FDS`, and SIGUSR1 reopening the log file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::binary::Txlb;

const TXLB: &str = env!("CARGO_BIN_EXE_txlb");

/// How long any one expected event may take.
const WAIT: Duration = Duration::from_secs(10);

/// The test's side of `NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        NotifySocket { socket, path }
    }

    /// The next notification other than a watchdog ping; counts the pings.
    fn next(&self, pings: &mut usize) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buf).expect("no notification in time");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text == "WATCHDOG=1" {
                *pings += 1;
            } else {
                return text;
            }
        }
    }
}

/// `command` (a `txlb run`) with its log at info collected by the shared
/// harness.
fn spawn(mut command: Command) -> Txlb {
    command
        .env("TXLB_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Txlb::spawn(command)
}

/// A backend on an ephemeral port that answers each connection with "hello\n".
fn hello_backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.write_all(b"hello\n");
        }
    });
    addr
}

/// What a client reads through the balancer at `addr`.
fn fetch(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn write_config(dir: &Path, listen: &str, host: SocketAddr, extra: &str) -> PathBuf {
    let path = dir.join("config.xml");
    std::fs::write(
        &path,
        format!(
            "<config>\n  <service name=\"svc\">\n    <listen ip=\"{listen}\"/>\n    <group name=\"g\" enable=\"true\">\n      <host name=\"h\" ip=\"{host}\"/>\n    </group>\n  </service>\n{extra}</config>\n"
        ),
    )
    .unwrap();
    path
}

fn run_command(config: &Path, workers: &str) -> Command {
    let mut command = Command::new(TXLB);
    command
        .args(["run", "--grace", "1", "--workers", workers, "--config"])
        .arg(config);
    command
}

#[test]
fn notifies_ready_after_binding_reloading_around_sighup_stopping_and_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let config = write_config(dir.path(), "127.0.0.1:0", hello_backend(), "");
    let mut command = run_command(&config, "1");
    command
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000");
    let mut txlb = spawn(command);
    let mut pings = 0;

    let first = notify.next(&mut pings);
    assert!(first.starts_with("READY=1"), "{first:?}");
    // At READY=1 the listener is bound: a client is served right away.
    assert_eq!(fetch(txlb.listener()), "hello\n");

    txlb.signal("HUP");
    let reloading = notify.next(&mut pings);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let ready = notify.next(&mut pings);
    assert!(ready.starts_with("READY=1"), "{ready:?}");
    txlb.wait_for("configuration reloaded", 0);

    // WATCHDOG_USEC=200ms: a ping every 100 ms.
    let deadline = Instant::now() + WAIT;
    while pings < 2 {
        assert!(Instant::now() < deadline, "no watchdog pings");
        let mut buf = [0u8; 64];
        let n = notify.socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        pings += 1;
    }

    txlb.signal("TERM");
    let stopping = notify.next(&mut pings);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    assert!(
        txlb.exit_status(WAIT).expect("txlb did not exit").success(),
        "{}",
        txlb.log_text()
    );
}

#[test]
fn serves_on_a_socket_passed_as_fd_3_instead_of_binding() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    // Bound and listening here, as systemd would; txlb binding the same address
    // itself would fail (no SO_REUSEPORT on this socket).
    let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = passed.local_addr().unwrap();
    let config = write_config(dir.path(), &addr.to_string(), hello_backend(), "");

    // LISTEN_PID must be txlb's own pid: a shell sets it to its pid, then execs.
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", TXLB])
        .args(run_command(&config, "2").get_args())
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "web")
        .env("NOTIFY_SOCKET", &notify.path);
    let fd = passed.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                // Already in place; dup2 would keep close-on-exec.
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let txlb = spawn(command);
    drop(passed);

    let ready = notify.next(&mut 0);
    assert!(
        ready.starts_with("READY=1"),
        "{ready:?}\n{}",
        txlb.log_text()
    );
    assert_eq!(txlb.listener(), addr);
    txlb.wait_for("listening on a socket passed by the service manager", 0);
    // Both workers accept on the one socket: several clients all get through.
    for _ in 0..8 {
        assert_eq!(fetch(addr), "hello\n");
    }
}

#[test]
fn an_upgraded_process_announces_its_pid_and_the_old_one_says_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let config = write_config(dir.path(), "127.0.0.1:0", hello_backend(), "");
    let mut command = run_command(&config, "2");
    command
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000");
    let mut txlb = spawn(command);
    let mut pings = 0;
    assert!(notify.next(&mut pings).starts_with("READY=1"));
    let addr = txlb.listener();

    let output = Command::new(TXLB)
        .args(["upgrade", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pid: u32 = stdout
        .split("PID ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no PID in {stdout:?}"));
    struct Stop(u32);
    impl Drop for Stop {
        fn drop(&mut self) {
            // SAFETY: kill with the pid txlb upgrade printed.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _stop = Stop(pid);
    // systemd follows the new process: MAINPID= with READY=1, which NotifyAccess=all
    // (the packaged unit) lets a process other than the main one send.
    let announced = notify.next(&mut pings);
    assert!(
        announced.starts_with(&format!("MAINPID={pid}\nREADY=1")),
        "{announced:?}"
    );
    assert!(
        txlb.exit_status(WAIT)
            .expect("the old process did not exit")
            .success(),
        "{}",
        txlb.log_text()
    );
    assert_eq!(fetch(addr), "hello\n");
    // The old process's drain sent no STOPPING=1 (systemd would stop the
    // service); the new one pings the watchdog.
    let deadline = Instant::now() + WAIT;
    let before = pings;
    while pings < before + 2 {
        assert!(
            Instant::now() < deadline,
            "no watchdog pings from the new process"
        );
        let mut buf = [0u8; 64];
        let n = notify.socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        pings += 1;
    }
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pkg/txlb.service")).unwrap();
    assert!(unit.contains("\nNotifyAccess=all\n"), "{unit}");
}

#[test]
fn sigusr1_reopens_a_renamed_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let log = dir.path().join("txlb.log");
    let logging = format!("  <logging file=\"{}\"/>\n", log.display());
    let config = write_config(dir.path(), "127.0.0.1:0", hello_backend(), &logging);
    let mut command = run_command(&config, "1");
    command.env("NOTIFY_SOCKET", &notify.path);
    let txlb = spawn(command);
    let ready = notify.next(&mut 0);
    assert!(
        ready.starts_with("READY=1"),
        "{ready:?}\n{}",
        txlb.log_text()
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("txlb running")
    );

    // What logrotate does: move the file away, then signal.
    let rotated = dir.path().join("txlb.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    txlb.signal("USR1");
    let deadline = Instant::now() + WAIT;
    loop {
        let fresh = std::fs::read_to_string(&log).unwrap_or_default();
        if fresh.contains("log file reopened") {
            break;
        }
        assert!(Instant::now() < deadline, "no new log file at {log:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("txlb running") && !old.contains("log file reopened"));
}
