//! Real servers from Debian for the protocol checks' tests (Redis,
//! PostgreSQL, MariaDB, openssl's TLS server), each started by the test on
//! an ephemeral loopback port in a temporary directory and killed when its
//! handle drops. A test skips (saying why) when a server's binary is absent,
//! unless `TXLB_REQUIRE_HOSTS` is set: then it fails, so CI cannot skip.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary at the first of `paths` that exists, else `None` (after saying
/// the test skips); panics instead when `TXLB_REQUIRE_HOSTS` is set.
pub fn binary(paths: &[&str], package: &str) -> Option<PathBuf> {
    if let Some(found) = paths.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Some(found);
    }
    let why = format!(
        "{} is not installed (Debian: apt-get install {package}; scripts/test.sh installs it)",
        paths[0]
    );
    assert!(
        std::env::var_os("TXLB_REQUIRE_HOSTS").is_none(),
        "TXLB_REQUIRE_HOSTS is set and {why}"
    );
    eprintln!("SKIPPED: {why}");
    None
}

/// A loopback port nothing uses now, TCP or UDP (bound then released: a server
/// started on it right after gets it unless another process races for it).
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Free for UDP too (servers like dnsmasq bind both): a UDP socket
        // of another test may hold the same number.
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A server process, killed (and waited for) on drop, with its directory.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Where it answers.
    pub addr: SocketAddr,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
}

impl Server {
    /// Starts `command` with its output in `log`, and waits (up to 20 s)
    /// until `addr` accepts connections.
    pub fn start(mut command: Command, addr: SocketAddr, log: &Path) -> Server {
        let out = std::fs::File::create(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let mut server = Server {
            child,
            addr,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{command:?} ended ({status}):\n{}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{command:?} does not listen on {addr}:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The server's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server`, if installed.
pub fn redis_binary() -> Option<PathBuf> {
    binary(&["/usr/bin/redis-server"], "redis-server")
}

/// A Redis server on a free port with nothing saved to disk, `args` added
/// (`--replicaof 127.0.0.1 PORT`, …).
pub fn redis(binary: &Path, dir: &Path, args: &[&str]) -> Server {
    let port = free_port();
    let mut command = Command::new(binary);
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .args(args);
    let log = dir.join(format!("redis-{port}.log"));
    Server::start(command, SocketAddr::from(([127, 0, 0, 1], port)), &log)
}

/// Sends `command` (inline) to the Redis at `addr`; its first reply line.
pub fn redis_command(addr: SocketAddr, command: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// PostgreSQL's programs' directory, if installed.
pub fn postgres_bin() -> Option<PathBuf> {
    binary(&["/usr/lib/postgresql/15/bin/postgres"], "postgresql")
        .map(|p| p.parent().unwrap().to_path_buf())
}

/// `command` as the `postgres` user when run as root (PostgreSQL refuses
/// root), else as is.
fn as_postgres(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A fresh PostgreSQL cluster in `dir/data` (trust authentication, user
/// `postgres`); `dir` is made the postgres user's when run as root.
pub fn postgres_initdb(bin: &Path, dir: &Path) -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let status = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let data = dir.join("data");
    let out = as_postgres(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

/// Starts the cluster in `data` on a free port (`extra`: `-c name=value`
/// settings), its socket in `dir`.
pub fn postgres(bin: &Path, data: &Path, dir: &Path, extra: &[&str]) -> Server {
    let port = free_port();
    let mut command = as_postgres(&bin.join("postgres"));
    command
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .args(extra);
    let log = dir.join(format!("postgres-{port}.log"));
    Server::start(command, SocketAddr::from(([127, 0, 0, 1], port)), &log)
}

/// Makes `path` the postgres user's when run as root (a file the test wrote
/// into a cluster's directory).
pub fn pg_ctl_chown(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let status = Command::new("chown")
            .arg("postgres")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// `pg_ctl ARGS -D data` as the postgres user.
pub fn pg_ctl(bin: &Path, data: &Path, args: &[&str]) {
    let out = as_postgres(&bin.join("pg_ctl"))
        .args(args)
        .arg("-D")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mariadbd` and `mariadb-install-db`, if installed.
pub fn mariadb_binaries() -> Option<(PathBuf, PathBuf)> {
    let server = binary(&["/usr/sbin/mariadbd"], "mariadb-server")?;
    let install = binary(&["/usr/bin/mariadb-install-db"], "mariadb-server")?;
    Some((server, install))
}

/// A fresh MariaDB data directory in `dir/data` (root without password).
pub fn mariadb_install(install: &Path, dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let out = Command::new(install)
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mariadb-install-db: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

/// A MariaDB server on `data` and a free port, its socket `dir/mysql.sock`
/// (`extra`: more options).
pub fn mariadb(server: &Path, data: &Path, dir: &Path, extra: &[&str]) -> Server {
    let port = free_port();
    let mut command = Command::new(server);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("mysql.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .args(["--user=root", "--bind-address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .args(extra);
    let log = dir.join(format!("mariadb-{port}.log"));
    Server::start(command, SocketAddr::from(([127, 0, 0, 1], port)), &log)
}

/// Runs `sql` with the `mariadb` client over the socket in `dir`, as root.
pub fn mariadb_sql(dir: &Path, sql: &str) {
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", dir.join("mysql.sock").display()))
        .args(["-u", "root", "-e", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mariadb -e {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl`, if installed.
pub fn openssl_binary() -> Option<PathBuf> {
    binary(&["/usr/bin/openssl"], "openssl")
}

/// `openssl s_server -www` (it answers `GET` with `HTTP/1.0 200 ok`) on a
/// free port, with a self-signed certificate made in `dir`.
pub fn tls_server(openssl: &Path, dir: &Path) -> Server {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.exists() {
        let out = Command::new(openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=check.test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let port = free_port();
    let mut command = Command::new(openssl);
    command
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key);
    let log = dir.join(format!("s_server-{port}.log"));
    Server::start(command, SocketAddr::from(([127, 0, 0, 1], port)), &log)
}
