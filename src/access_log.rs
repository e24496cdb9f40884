//! The access log: one line per finished connection (client, listener, service,
//! host, connect time, duration, bytes each way, how it ended, failovers), as
//! `key=value` text or JSON. Connections hand their record to a bounded channel;
//! a dedicated thread formats and writes, so the data path never waits on a disk.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use tokio::sync::mpsc;

use crate::config::AccessFormat;
use crate::logging::LogFile;
use crate::proxy::ConnectionRecord;

/// Records waiting to be written; beyond this, new ones are dropped.
pub const ACCESS_LOG_BACKLOG: usize = 65_536;

/// A running access log.
#[derive(Debug, Clone)]
pub struct AccessLog {
    file: LogFile,
}

impl AccessLog {
    /// Opens `path` and starts the writer thread. Returns the log and the sender
    /// connections use.
    pub(crate) fn start(
        path: &Path,
        format: AccessFormat,
    ) -> io::Result<(AccessLog, mpsc::Sender<ConnectionRecord>)> {
        let file = LogFile::open(path)?;
        let (tx, mut rx) = mpsc::channel::<ConnectionRecord>(ACCESS_LOG_BACKLOG);
        let writer = file.clone();
        std::thread::Builder::new()
            .name("txlb-access-log".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(256);
                let mut text = String::new();
                // Ends when every sender is gone (the balancer dropped).
                while rx.blocking_recv_many(&mut batch, 256) > 0 {
                    text.clear();
                    for record in batch.drain(..) {
                        format_record(&record, format, &mut text);
                    }
                    if let Err(error) = writer.write_all(text.as_bytes()) {
                        tracing::warn!(%error, "access log write failed");
                    }
                }
            })?;
        Ok((AccessLog { file }, tx))
    }

    /// Closes and reopens the file (log rotation).
    pub fn reopen(&self) -> io::Result<()> {
        self.file.reopen()
    }
}

/// Appends one line for `r` to `out`.
pub fn format_record(r: &ConnectionRecord, format: AccessFormat, out: &mut String) {
    match format {
        AccessFormat::Json => {
            if let Ok(json) = serde_json::to_string(r) {
                out.push_str(&json);
            }
        }
        AccessFormat::Text => {
            let ended = serde_json::to_value(r.ended)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = write!(
                out,
                "start={:.3} client={} listener={} service={:?} host={:?} host_addr={} connect_ms={:.3} duration_ms={:.3} bytes_in={} bytes_out={} ended={} failovers={}",
                r.start,
                r.client,
                r.listener,
                r.service,
                r.host,
                r.host_addr,
                r.connect_seconds * 1e3,
                r.duration_seconds * 1e3,
                r.bytes_in,
                r.bytes_out,
                ended,
                r.failovers
            );
            if let Some(seen) = &r.inspection {
                let _ = write!(out, " protocol={}", seen.protocol);
                if let Some(sni) = &seen.sni {
                    let _ = write!(out, " sni={sni:?}");
                }
                if !seen.alpn.is_empty() {
                    let _ = write!(out, " alpn={:?}", seen.alpn.join(","));
                }
                match &seen.route {
                    Some(route) => {
                        let _ = write!(out, " route={route:?}");
                    }
                    None => out.push_str(" route=none"),
                }
                if let Some(tls) = &seen.tls {
                    let _ = write!(out, " tls_version={} cipher={}", tls.version, tls.cipher);
                    if let Some(alpn) = &tls.alpn {
                        let _ = write!(out, " tls_alpn={alpn:?}");
                    }
                    if let Some(subject) = &tls.client_subject {
                        let _ = write!(out, " client_subject={subject:?}");
                    }
                    if tls.resumed {
                        out.push_str(" tls_resumed=true");
                    }
                }
            }
        }
    }
    out.push('\n');
}

impl LogFile {
    /// Appends `bytes` in one write under the file's lock.
    pub(crate) fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut writer = tracing_subscriber::fmt::MakeWriter::make_writer(self);
        writer.write_all(bytes)?;
        writer.flush()
    }
}
