//! `txlb check`'s report on a configuration: what it runs and what it turns on,
//! with the mistakes worth a warning (host names that do not resolve, passwords
//! that are not hashes, a missing `authorizedKeys` file).

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::config::Config;

/// Reads every terminating listener's certificates, keys and client CAs
/// (`tls::load`, as start and reloads do), and every originating group's
/// CA file (or the system's roots) and client certificate
/// (`tls::origin::load`): their description for [`report`], one line each,
/// or the first that does not load, with the FILE:LINE:COL that names it.
pub fn certificates(config: &Config) -> Result<Vec<String>, String> {
    let now = std::time::SystemTime::now();
    let mut lines = Vec::new();
    let mut system = crate::tls::origin::SystemRoots::default();
    for service in &config.services {
        for listener in &service.listeners {
            let Some(tls) = &listener.tls else {
                continue;
            };
            let terminator = crate::tls::load(tls).map_err(|e| e.to_string())?;
            lines.push(format!("  tls on {listener}:"));
            for cert in &tls.acme {
                lines.push(format!("    from ACME: {}", cert.names.join(" ")));
            }
            for cert in &terminator.certs {
                let left = cert.expires_in(now);
                let warning = if left <= 0 {
                    "  warning: expired"
                } else if left <= crate::tls::EXPIRY_WARNING.as_secs() as i64 {
                    "  warning: expires within 14 days"
                } else {
                    ""
                };
                lines.push(format!(
                    "    {} ({}), expires in {} days{warning}",
                    cert.file.display(),
                    cert.names.join(" "),
                    left / 86_400
                ));
            }
        }
        for group in &service.groups {
            let originates =
                group.options.tls || group.hosts.iter().any(|h| h.options.tls == Some(true));
            if !originates {
                continue;
            }
            let fail = |e: crate::tls::TlsError| {
                let at = e.at.map(|at| format!("{at}: ")).unwrap_or_default();
                format!(
                    "{at}service {:?}, group {:?}: {}",
                    service.name, group.name, e.message
                )
            };
            let tls = crate::tls::OriginTls::of(&group.options).map_err(fail)?;
            let loaded = crate::tls::origin::load(&tls, &mut system).map_err(fail)?;
            let verify = match &tls.verify {
                crate::config::TlsVerify::System => {
                    format!("verified against the system's roots ({})", loaded.roots)
                }
                crate::config::TlsVerify::Ca(file) => format!(
                    "verified against {} ({} CA certificates)",
                    file.path.display(),
                    loaded.roots
                ),
                crate::config::TlsVerify::None => {
                    "not verified (tlsVerify=\"none\")  warning: hosts' certificates are not verified".to_string()
                }
            };
            lines.push(format!(
                "  tls to the hosts of group {}: {verify}",
                group.name
            ));
            if let Some(cert) = &loaded.cert {
                lines.push(format!(
                    "    client certificate {} ({}), expires in {} days",
                    cert.file.display(),
                    cert.names.join(" "),
                    cert.expires_in(now) / 86_400
                ));
            }
        }
    }
    Ok(lines)
}

/// What `txlb check` prints after `FILE: OK`: every service with its
/// listeners, groups and hosts (a host whose name does not resolve gets a
/// warning: it starts bad), what the file turns on besides, and the mistakes
/// worth a warning. One line per element, each ending in a newline.
pub async fn report(config: &Config) -> String {
    let mut out = String::new();
    let mut warnings = 0;
    for service in &config.services {
        let listeners: Vec<String> = service.listeners.iter().map(ToString::to_string).collect();
        if listeners.is_empty() {
            let _ = writeln!(
                out,
                "service {}: no listener (reached by routes)",
                service.name
            );
        } else {
            let _ = writeln!(
                out,
                "service {}: listen {}",
                service.name,
                listeners.join(", ")
            );
        }
        let o = &service.options;
        if o.protocol == crate::config::Transport::Udp {
            let _ = writeln!(
                out,
                "  udp: sessionTimeout {}s, responses {}, maxSessions {}",
                crate::config::seconds(o.session_timeout),
                match o.responses {
                    0 => "unlimited".to_string(),
                    n => n.to_string(),
                },
                o.max_sessions
            );
        }
        for listener in service.listeners.iter().filter(|l| !l.routes.is_empty()) {
            let _ = writeln!(out, "  routes on {listener}:");
            for route in &listener.routes {
                let _ = writeln!(out, "    {route}");
            }
        }
        for group in &service.groups {
            let enabled = if group.name == service.enabled_group {
                ", enabled"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  group {} ({}{}): {} hosts",
                group.name,
                group.scheduler,
                enabled,
                group.hosts.len()
            );
            for host in &group.hosts {
                let note = match config.resolve_host(&host.address).await {
                    Ok(_) => String::new(),
                    Err(reason) => {
                        warnings += 1;
                        format!("  warning: {reason}")
                    }
                };
                let _ = writeln!(
                    out,
                    "    {} {} weight {}{}",
                    host.name, host.address, host.weight, note
                );
            }
        }
    }
    for line in settings_summary(config) {
        let _ = writeln!(out, "{line}");
    }
    for warning in settings_warnings(config) {
        let _ = writeln!(out, "warning: {warning}");
    }
    if warnings > 0 {
        let _ = writeln!(
            out,
            "{warnings} warning(s): hosts whose names do not resolve start bad"
        );
    }
    out
}

/// Mistakes `txlb check` warns of outside the services: passwords that are
/// not hashes (nobody can log in), DES hashes (only 8 characters count), an
/// `authorizedKeys` file that is not there.
fn settings_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for service in &config.services {
        let enabled = service
            .groups
            .iter()
            .find(|g| g.name == service.enabled_group);
        if enabled.is_some_and(|g| g.hosts.is_empty()) {
            warnings.push(format!(
                "service {:?}: its enabled group {:?} has no host, so its clients are closed \
                 until one is added",
                service.name, service.enabled_group
            ));
        }
    }
    let Some(admin) = &config.admin else {
        return warnings;
    };
    for user in &admin.users {
        match crate::admin::crypt_scheme(&user.password_hash) {
            None => warnings.push(format!(
                "user {:?}: the password is not a crypt(3) hash, so no password matches it \
                 (txlb passwd makes one)",
                user.name
            )),
            Some("DES") => warnings.push(format!(
                "user {:?}: a traditional DES hash checks only the first 8 characters of a \
                 password (txlb passwd makes a SHA-512 one)",
                user.name
            )),
            Some(_) => {}
        }
    }
    if let Some(keys) = admin.ssh.as_ref().and_then(|s| s.authorized_keys.as_ref())
        && !keys.is_file()
    {
        warnings.push(format!(
            "authorizedKeys {}: no such file, so no key can log in until it exists",
            keys.display()
        ));
    }
    warnings
}

/// What `txlb check` says of everything but the services: the admin web server,
/// the SSH console, the users, the control socket, the fleet, the managers and
/// the logs, so an operator sees what the file turns on.
fn settings_summary(config: &Config) -> Vec<String> {
    let mut lines = Vec::new();
    let admin = config.admin.as_ref();
    let users = admin.map_or(&[][..], |a| a.users.as_slice());
    match admin.and_then(|a| a.web.as_ref()) {
        None => lines.push("admin web: not configured".to_string()),
        Some(web) if !web.enable => lines.push(format!("admin web: {} (disabled)", web.listen)),
        Some(web) => {
            let scheme = if web.secure { "https" } else { "http" };
            let mut line = format!("admin web: {scheme}://{}/", web.listen);
            if web.metrics_public {
                line.push_str(", /metrics without login");
            }
            if users.is_empty() {
                line.push_str(", no users: open without login on loopback only");
            }
            lines.push(line);
        }
    }
    match admin.and_then(|a| a.ssh.as_ref()) {
        None => lines.push("admin ssh: not configured".to_string()),
        Some(ssh) if !ssh.enable => lines.push(format!("admin ssh: {} (disabled)", ssh.listen)),
        Some(ssh) => {
            let keys = ssh.authorized_keys.as_ref().map_or_else(
                || "passwords only".to_string(),
                |k| format!("passwords and keys in {}", k.display()),
            );
            lines.push(format!("admin ssh: {}, {keys}", ssh.listen));
        }
    }
    if users.is_empty() {
        lines.push("users: none".to_string());
    } else {
        let names: Vec<String> = users
            .iter()
            .map(|u| {
                let access = match u.access {
                    crate::config::Access::Full => "full",
                    crate::config::Access::ReadOnly => "read-only",
                };
                format!("{} ({access})", u.name)
            })
            .collect();
        lines.push(format!("users: {}", names.join(", ")));
    }
    if let Some(control) = &config.control {
        lines.push(format!("control socket: {}", control.socket.display()));
    }
    if let Some(cluster) = &config.cluster {
        lines.push(format!(
            "fleet: instance {} under {} on {}",
            cluster.name,
            cluster.prefix,
            cluster.endpoints.join(", ")
        ));
    }
    let manager = &config.manager;
    let task = |name: &str, t: &crate::config::ManagerTask| {
        if t.enable {
            format!("{name} every {} s", t.interval.as_secs_f64())
        } else {
            format!("{name} off")
        }
    };
    lines.push(format!(
        "managers: {}, {}, {}",
        task("hostCheck", &manager.host_check),
        task("heartbeat", &manager.heartbeat),
        task("configCheck", &manager.config_check)
    ));
    let log = |file: &Option<PathBuf>, none: &str| {
        file.as_ref()
            .map_or_else(|| none.to_string(), |f| f.display().to_string())
    };
    lines.push(format!(
        "logs: {}; access log: {}",
        log(&config.logging.file, "stderr"),
        log(&config.logging.access, "none")
    ));
    lines
}
