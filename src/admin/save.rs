//! `saveConfig`'s default: the running configuration written over the file it was
//! loaded from, in the same format, atomically (temporary file, fsync, rename),
//! keeping the previous file as `FILE.bak`.
//!
//! This rewrites the whole file; the write-back that keeps comments and untouched
//! elements replaces it where it is wired (one call site in `main.rs`).

use std::fs::{self, File};
use std::io::Write as _;
use std::path::Path;

use crate::config::Config;

/// Writes `running` to `running.source`; returns the message for `OK …`.
pub fn save_to_source(running: &Config) -> Result<String, String> {
    let path = running
        .source
        .as_deref()
        .ok_or("the running configuration was not loaded from a file")?;
    let toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let text = if toml {
        running.to_toml()
    } else {
        running.to_xml()
    };
    write_atomically(path, text.as_bytes()).map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "writing the configuration failed");
        "the configuration file could not be written (see the log)".to_string()
    })?;
    tracing::info!(path = %path.display(), "running configuration saved");
    Ok(format!(
        "configuration saved to {}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "config".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        if let Ok(meta) = fs::metadata(path) {
            // Keep the file's permissions (it may hold password hashes).
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        if path.exists() {
            let bak = dir.join(format!("{name}.bak"));
            let _ = fs::remove_file(&bak);
            fs::hard_link(path, &bak).or_else(|_| fs::copy(path, &bak).map(|_| ()))?;
        }
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_atomically_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.xml");
        let original = "<config>\n  <service name=\"s\">\n    <listen ip=\"127.0.0.1:0\"/>\n    \
             <group name=\"g\" enable=\"true\"><host name=\"h\" ip=\"127.0.0.1:1\"/></group>\n  \
             </service>\n</config>\n";
        fs::write(&path, original).unwrap();
        let mut config = Config::from_path(&path).unwrap();
        config.services[0].groups[0].hosts[0].weight = 7;
        let message = save_to_source(&config).unwrap();
        assert_eq!(message, "configuration saved to lb.xml");
        assert_eq!(
            fs::read_to_string(dir.path().join("lb.xml.bak")).unwrap(),
            original
        );
        let reloaded = Config::from_path(&path).unwrap();
        assert_eq!(reloaded, config);
        config.source = None;
        assert!(save_to_source(&config).is_err());
    }
}
