//! Helpers for SSH console tests: client keys made with `ssh-keygen`, an
//! `authorized_keys` file, and the real OpenSSH client run without prompts.
//! Tests skip (with a message) when the OpenSSH client is not installed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// How long one `ssh` run may take.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(30);

/// True (and says so) when `ssh` or `ssh-keygen` is missing: the test returns.
pub fn ssh_missing() -> bool {
    let found = |tool: &str| {
        std::process::Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if found("ssh")
        && std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_ok()
    {
        return false;
    }
    eprintln!(
        "skipped: the OpenSSH client (ssh, ssh-keygen) is not installed; \
         scripts/test.sh installs openssh-client"
    );
    true
}

/// Client keys and files of one test, in a temporary directory.
pub struct Keys {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// A key with full access.
    pub full: PathBuf,
    /// A key listed with `access=readonly`.
    pub readonly: PathBuf,
    /// A key that is not listed.
    pub wrong: PathBuf,
    /// The `authorized_keys` file.
    pub authorized: PathBuf,
    /// The client's known_hosts file.
    pub known_hosts: PathBuf,
}

/// Makes an Ed25519 key pair `dir/name` without passphrase; returns its path.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen failed");
    path
}

impl Keys {
    /// Three keys; `full` (as user `admin`) and `readonly` (options
    /// `access=readonly,user="ops"`) authorized.
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let full = keygen(dir.path(), "full");
        let readonly = keygen(dir.path(), "readonly");
        let wrong = keygen(dir.path(), "wrong");
        let public = |p: &Path| std::fs::read_to_string(p.with_extension("pub")).unwrap();
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(
            &authorized,
            format!(
                "# test keys\nuser=\"admin\" {}access=readonly,user=\"ops\" {}",
                public(&full),
                public(&readonly)
            ),
        )
        .unwrap();
        let known_hosts = dir.path().join("known_hosts");
        Keys {
            full,
            readonly,
            wrong,
            authorized,
            known_hosts,
            dir,
        }
    }
}

/// What one `ssh` run gave.
#[derive(Debug)]
pub struct Ran {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit status (255: ssh itself failed).
    pub status: i32,
}

impl Ran {
    /// Asserts the command was refused (exit status 1) with `says` on stderr.
    #[allow(dead_code)] // not every test binary that includes this module uses it
    pub fn assert_refused(&self, says: &str) {
        assert_eq!(self.status, 1, "{self:?}");
        assert!(self.stderr.contains(says), "expected {says:?}: {self:?}");
    }
}

/// The options for a prompt-free run with `key` to 127.0.0.1:`port`.
pub fn ssh_args(port: u16, key: &Path, known_hosts: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "KbdInteractiveAuthentication=no",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("-o".into());
    args.push(format!("UserKnownHostsFile={}", known_hosts.display()));
    args.push("-i".into());
    args.push(key.display().to_string());
    args.push("-p".into());
    args.push(port.to_string());
    args
}

/// An interactive `ssh admin@127.0.0.1` session (with `-tt`, a terminal, when
/// `tty`), its standard streams piped to the test.
pub fn ssh_session(port: u16, key: &Path, known_hosts: &Path, tty: bool) -> tokio::process::Child {
    let mut command = tokio::process::Command::new("ssh");
    if tty {
        command.arg("-tt");
    }
    command
        .args(ssh_args(port, key, known_hosts))
        .arg("admin@127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh runs")
}

/// Runs `ssh … USER@127.0.0.1 COMMAND`, with `stdin` sent then closed.
pub async fn ssh(
    port: u16,
    key: &Path,
    known_hosts: &Path,
    user: &str,
    command: &str,
    stdin: Option<&str>,
) -> Ran {
    let mut child = tokio::process::Command::new("ssh")
        .args(ssh_args(port, key, known_hosts))
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ssh runs");
    if let Some(text) = stdin {
        let mut input = child.stdin.take().unwrap();
        input.write_all(text.as_bytes()).await.unwrap();
        drop(input);
    }
    let output = tokio::time::timeout(SSH_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ssh {command:?} took more than {SSH_TIMEOUT:?}"))
        .unwrap();
    Ran {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        status: output.status.code().unwrap_or(-1),
    }
}
