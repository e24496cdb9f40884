//! Write-back: the running configuration into its file (configCheck, `saveConfig`).
//!
//! txLoadBalancer, HAProxy's server-state file and sozu's state dump all write
//! their own rendering and lose the operator's file. txlb edits the file
//! instead: in the format it was loaded from, only the elements, keys and
//! entries that changed are rewritten; comments, `<note>`s, ordering, blank
//! lines and quoting of everything else stay byte for byte.
//!
//! - [`render`]: pure: original text + the config it loaded into + the running
//!   config → the new text, verified to load back into the running config
//!   (falling back to a full rendering, comments lost, when a change cannot be
//!   made in place; never a text that does not load).
//! - [`save`]: the file on disk is re-read first; if it was edited since it was
//!   loaded it is left alone and a [`Conflict`] carries both differences.
//!   Otherwise the new text goes to a temporary file beside it (created
//!   exclusively under a random name, with the file's owner and mode), is
//!   fsynced and renamed over the file, after the previous text was saved the
//!   same way as `FILE.bak`: a crash at any moment leaves the old or the new
//!   file, never a truncated one, and nothing planted in the directory is
//!   written through.
//! - [`WriteBack`]: the file's last known text and configuration, shared by the
//!   configCheck task and the admin plane's `saveConfig`.
//! - [`run_config_check`]: the configCheck manager.

mod edit_toml;
mod edit_xml;

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::model::{Config, ControlConfig};
use super::write::{to_toml, to_xml, written_path};
use super::{ConfigError, Format};

/// Longest time spent computing one of a conflict's differences; past it the
/// difference is coarser, never missing.
const DIFF_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything that can stop a write-back.
#[derive(Debug, thiserror::Error)]
pub enum WriteBackError {
    /// The file was edited on disk since it was loaded (or last written): it is
    /// not overwritten. Carries both differences for the operator.
    #[error("{}: edited on disk since it was loaded; not overwritten", .0.path.display())]
    Conflict(Box<Conflict>),
    /// The file could not be read back before writing.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// Writing, syncing or renaming failed; the file is unchanged.
    #[error("{}: cannot write the configuration file", path.display())]
    Write {
        /// The file being written (the configuration or its `.bak`).
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Neither the in-place edit nor the full rendering loads back into the
    /// running configuration (a bug, reported rather than written).
    #[error("{}: the running configuration does not survive being written in this format", path.display())]
    Unrepresentable {
        /// The configuration file.
        path: PathBuf,
    },
}

/// A file edited on disk since it was loaded, with what differs, as unified
/// diffs from the text txlb last knew ("boot": as loaded, or as last written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The configuration file.
    pub path: PathBuf,
    /// What the operator changed on disk: boot text → file now.
    pub file_vs_boot: String,
    /// What changed at run time: boot text → the running configuration as it
    /// would have been written.
    pub running_vs_boot: String,
}

/// What a successful [`save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The file already holds the running configuration: nothing written.
    Unchanged,
    /// The file was edited on disk, and what it says now is exactly the running
    /// configuration (edited, then reloaded): nothing written, and its text is
    /// the new base.
    Adopted,
    /// The file was replaced; the previous text is in `FILE.bak`.
    Written {
        /// Whether comments and layout were kept (`false`: a change could not be
        /// made in place and the file was rendered in full).
        preserved: bool,
    },
}

/// What a save did, in the words of `saveConfig`'s answer.
impl std::fmt::Display for SaveOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SaveOutcome::Unchanged => "the file already held the running configuration",
            SaveOutcome::Adopted => {
                "the file, edited on disk, already held the running configuration: \
                 taken as the new base"
            }
            SaveOutcome::Written { preserved: true } => "written, comments and layout kept",
            SaveOutcome::Written { preserved: false } => {
                "written in full (a change could not be made in place)"
            }
        })
    }
}

/// A new text for the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The whole file.
    pub text: String,
    /// Whether everything unchanged was kept byte for byte (`false`: full
    /// rendering, comments lost).
    pub preserved: bool,
}

/// Whether two configurations are the same, wherever they were read from.
pub fn same_config(a: &Config, b: &Config) -> bool {
    // Destructured so that a new field is a compile error here, not a silent
    // "unchanged".
    let Config {
        source: _,
        services,
        admin,
        manager,
        logging,
        control,
        cluster,
        resolver,
        acme,
    } = a;
    *services == b.services
        && *admin == b.admin
        && *manager == b.manager
        && *logging == b.logging
        && *control == b.control
        && *cluster == b.cluster
        && *resolver == b.resolver
        && *acme == b.acme
}

/// The index of the first item of `items` with each key: how write-back
/// finds an item of one list in the other (a scan for each was quadratic:
/// saving 80,000 hosts took 30 s).
fn first_index<'a, T, K: Eq + std::hash::Hash>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> std::collections::HashMap<K, usize> {
    let mut at = std::collections::HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        at.entry(key(item)).or_insert(i);
    }
    at
}

/// How many items `boot` and `running` share at their start, and then at
/// their end (never overlapping the start).
fn common_ends<T: PartialEq>(boot: &[T], running: &[T]) -> (usize, usize) {
    let prefix = boot.iter().zip(running).take_while(|(b, r)| b == r).count();
    let room = boot.len().min(running.len()) - prefix;
    let suffix = boot
        .iter()
        .rev()
        .zip(running.iter().rev())
        .take(room)
        .take_while(|(b, r)| b == r)
        .count();
    (prefix, suffix)
}

/// The directory relative paths in the file are resolved against.
fn base_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

fn loads_as(path: &Path, text: &str, running: &Config) -> bool {
    Config::from_text(path, text).is_ok_and(|c| same_config(&c, running))
}

/// The whole running configuration in the file's format, paths made relative
/// again so it reloads to the same configuration.
fn full_rendering(path: &Path, running: &Config) -> String {
    let dir = base_dir(path);
    let mut config = running.clone();
    if let Some(file) = &mut config.logging.file {
        *file = PathBuf::from(written_path(file, dir));
    }
    if let Some(ControlConfig { socket }) = &mut config.control {
        *socket = PathBuf::from(written_path(socket, dir));
    }
    if let Some(ssh) = config.admin.as_mut().and_then(|a| a.ssh.as_mut()) {
        for path in [&mut ssh.authorized_keys, &mut ssh.host_key]
            .into_iter()
            .flatten()
        {
            *path = PathBuf::from(written_path(path, dir));
        }
    }
    match Format::of(path) {
        Format::Xml => to_xml(&config),
        Format::Toml => to_toml(&config),
    }
}

/// The new text of the file `path`, whose current text `original` loaded into
/// `boot`, so that it loads into `running`.
///
/// Only what differs between `boot` and `running` is edited; the result is
/// loaded again and must equal `running` (ignoring `source`). When the edit
/// cannot be made in place, the whole configuration is rendered instead
/// (`preserved: false`). Pure: reads no file.
pub fn render(
    path: &Path,
    original: &str,
    boot: &Config,
    running: &Config,
) -> Result<Rendered, WriteBackError> {
    if same_config(boot, running) {
        return Ok(Rendered {
            text: original.to_string(),
            preserved: true,
        });
    }
    let dir = base_dir(path);
    // The cluster is set by hand, once per instance, and the resolver and
    // ACME settings change only with the file (a reload): a change of any is
    // rendered in full, in both formats.
    let edited = if boot.cluster != running.cluster
        || boot.resolver != running.resolver
        || boot.acme != running.acme
    {
        None
    } else {
        match Format::of(path) {
            Format::Xml => edit_xml::edit(original, dir, boot, running),
            Format::Toml => edit_toml::edit(original, dir, boot, running),
        }
    };
    if let Some(text) = edited
        && loads_as(path, &text, running)
    {
        return Ok(Rendered {
            text,
            preserved: true,
        });
    }
    let text = full_rendering(path, running);
    if loads_as(path, &text, running) {
        Ok(Rendered {
            text,
            preserved: false,
        })
    } else {
        Err(WriteBackError::Unrepresentable {
            path: path.to_path_buf(),
        })
    }
}

/// A unified diff of two texts (empty when they are equal).
pub fn unified_diff(old_label: &str, old: &str, new_label: &str, new: &str) -> String {
    similar::TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

fn conflict(
    path: &Path,
    original: &str,
    on_disk: &str,
    boot: &Config,
    running: &Config,
) -> Conflict {
    let name = path.display();
    let running_text = render(path, original, boot, running)
        .map(|r| r.text)
        .unwrap_or_else(|_| full_rendering(path, running));
    Conflict {
        path: path.to_path_buf(),
        file_vs_boot: unified_diff(
            &format!("{name} (boot)"),
            original,
            &format!("{name} (on disk)"),
            on_disk,
        ),
        running_vs_boot: unified_diff(
            &format!("{name} (boot)"),
            original,
            &format!("{name} (running)"),
            &running_text,
        ),
    }
}

/// Writes the running configuration into `path`, whose text was `original`
/// when it loaded into `boot`.
///
/// The file is read again first: if it no longer says `original`, it was edited
/// on disk and is not overwritten ([`WriteBackError::Conflict`]), unless what it
/// says now is exactly `running` ([`SaveOutcome::Adopted`]). Otherwise the new
/// text replaces it atomically (see the module docs), keeping its permissions,
/// and the previous text is kept as `FILE.bak`. A symbolic link is followed and
/// the file it points to is replaced (with the `.bak` beside that file).
pub fn save(
    path: &Path,
    original: &str,
    boot: &Config,
    running: &Config,
) -> Result<SaveOutcome, WriteBackError> {
    save_text(path, original, boot, running).map(|(outcome, _)| outcome)
}

/// [`save`], also giving the text the file holds afterwards.
fn save_text(
    path: &Path,
    original: &str,
    boot: &Config,
    running: &Config,
) -> Result<(SaveOutcome, String), WriteBackError> {
    let on_disk = super::read_text(path).map_err(|source| WriteBackError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if on_disk != original {
        if loads_as(path, &on_disk, running) {
            return Ok((SaveOutcome::Adopted, on_disk));
        }
        return Err(WriteBackError::Conflict(Box::new(conflict(
            path, original, &on_disk, boot, running,
        ))));
    }
    let rendered = render(path, original, boot, running)?;
    if rendered.text == on_disk {
        return Ok((SaveOutcome::Unchanged, on_disk));
    }
    replace_file(path, &on_disk, &rendered.text)?;
    Ok((
        SaveOutcome::Written {
            preserved: rendered.preserved,
        },
        rendered.text,
    ))
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Keeps `old` as `FILE.bak`, then puts `new` in place; each atomically, each
/// with the file's mode and owner.
fn replace_file(path: &Path, old: &str, new: &str) -> Result<(), WriteBackError> {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let like = fs::metadata(&target).ok();
    // The backup first: a crash after it leaves the old file and its copy.
    write_atomically(&sibling(&target, ".bak"), old, like.as_ref())?;
    write_atomically(&target, new, like.as_ref())?;
    // Makes both renames durable. Some file systems cannot sync a directory;
    // the renames are still atomic there, only possibly not yet on disk.
    if let Some(dir) = base_dir(&target)
        && let Ok(dir) = File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Writes a temporary file beside `dest`, syncs it and renames it over `dest`:
/// readers see the old content or the new one, never part of it.
///
/// The temporary file is created exclusively (`O_CREAT|O_EXCL`, mode 0600)
/// under a random name, so nothing planted in the directory (a file or a
/// symbolic link under a predictable name such as `FILE.tmp`) is ever opened,
/// followed, or renamed into place. It takes the owner and mode of `like` (the
/// configuration file) before any content is written.
fn write_atomically(
    dest: &Path,
    text: &str,
    like: Option<&fs::Metadata>,
) -> Result<(), WriteBackError> {
    let failed = |source| WriteBackError::Write {
        path: dest.to_path_buf(),
        source,
    };
    let dir = base_dir(dest).unwrap_or(Path::new("."));
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(dest.file_name().unwrap_or_default());
    prefix.push(".");
    // Removed on drop, so every error below leaves nothing behind.
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(failed)?;
    if let Some(like) = like {
        keep_owner_and_mode(tmp.as_file(), like).map_err(failed)?;
    }
    tmp.write_all(text.as_bytes()).map_err(failed)?;
    tmp.as_file().sync_all().map_err(failed)?;
    tmp.persist(dest).map_err(|e| failed(e.error))?;
    Ok(())
}

/// Gives `file` the owner, group and permission bits of `like`. The owner can
/// only be kept by a privileged process (or when it is ours already); the group
/// when we belong to it; the mode always.
fn keep_owner_and_mode(file: &File, like: &fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, fchown};
    if fchown(file, Some(like.uid()), Some(like.gid())).is_err() {
        let _ = fchown(file, None, Some(like.gid()));
    }
    // After chown, which may clear set-id bits.
    file.set_permissions(like.permissions())
}

/// A configuration file, what it last said and the configuration that was.
///
/// Shared (in an `Arc`) by the configCheck task and the admin plane
/// (`saveConfig`, the conflict shown on the page).
#[derive(Debug)]
pub struct WriteBack {
    path: PathBuf,
    /// Written by [`WriteBack::save`], read by every method. A std mutex: saves
    /// are short blocking file I/O that must not interleave, and it is never
    /// held across an `.await`.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The file's text as loaded or last written.
    text: String,
    /// What `text` loads into.
    config: Config,
    /// The conflict found by the last save, until a save succeeds.
    conflict: Option<Conflict>,
}

impl WriteBack {
    /// Write-back for `path`, whose current text is `text`, which loaded into
    /// `config` (use [`Config::from_text`] on that very text).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>, config: Config) -> WriteBack {
        WriteBack {
            path: path.into(),
            state: Mutex::new(State {
                text: text.into(),
                config,
                conflict: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every field
        // is replaced whole), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file (as last loaded or written) already holds `running`.
    pub fn is_saved(&self, running: &Config) -> bool {
        same_config(&self.lock().config, running)
    }

    /// The file's text as loaded or last written.
    pub fn text(&self) -> String {
        self.lock().text.clone()
    }

    /// The conflict found by the last save, if it has not been resolved since.
    pub fn conflict(&self) -> Option<Conflict> {
        self.lock().conflict.clone()
    }

    /// The conflict as it stands now against `running`, for display: while one
    /// is recorded, the file is read again and both differences recomputed, so
    /// an undone edit or a running configuration changed back shows at once.
    /// `None` once the file says what it said, or exactly what runs (a save
    /// would adopt it). Blocking file I/O, only while a conflict is recorded.
    pub fn conflict_now(&self, running: &Config) -> Option<Conflict> {
        let mut state = self.lock();
        state.conflict.as_ref()?;
        let fresh = match super::read_text(&self.path) {
            Err(_) => return state.conflict.clone(),
            Ok(on_disk) if on_disk == state.text || loads_as(&self.path, &on_disk, running) => None,
            Ok(on_disk) => Some(conflict(
                &self.path,
                &state.text,
                &on_disk,
                &state.config,
                running,
            )),
        };
        state.conflict.clone_from(&fresh);
        fresh
    }

    /// Writes `running` into the file (see [`save`]); on success the written
    /// text and `running` become the base of the next comparison. Blocking file
    /// I/O: from async code, call it in `spawn_blocking`.
    pub fn save(&self, running: &Config) -> Result<SaveOutcome, WriteBackError> {
        let mut state = self.lock();
        let result = save_text(&self.path, &state.text, &state.config, running);
        let path = self.path.display();
        match result {
            Ok((outcome, text)) => {
                match outcome {
                    SaveOutcome::Written { preserved } => {
                        tracing::info!(config = %path, preserved, "config written back");
                        if !preserved {
                            tracing::warn!(
                                config = %path,
                                "config rewritten in full: a change could not be made in place, comments and layout were lost (previous file in .bak)"
                            );
                        }
                    }
                    SaveOutcome::Adopted => tracing::info!(
                        config = %path,
                        "config file edited on disk holds the running configuration: taken as the new base"
                    ),
                    SaveOutcome::Unchanged => {}
                }
                state.text = text;
                state.config = running.clone();
                state.conflict = None;
                Ok(outcome)
            }
            Err(WriteBackError::Conflict(conflict)) => {
                state.conflict = Some((*conflict).clone());
                Err(WriteBackError::Conflict(conflict))
            }
            Err(other) => Err(other),
        }
    }

    /// A reload applied the file's `text` (which loaded into `config`): the
    /// file says that now, and it is the base of the next save (a conflict,
    /// the file edited since, is resolved by that very reload).
    pub fn rebase(&self, text: String, config: Config) {
        let mut state = self.lock();
        if state.conflict.take().is_some() {
            tracing::info!(
                config = %self.path.display(),
                "config file edited on disk holds the running configuration: taken as the new base"
            );
        }
        state.text = text;
        state.config = config;
    }

    /// `saveConfig` / `config save`: [`WriteBack::save`], answered in words:
    /// what was done (the message after `OK`), or why not. A conflict is
    /// logged with both differences, passwords redacted.
    pub fn save_reply(&self, running: &Config) -> Result<String, String> {
        match self.save(running) {
            Ok(outcome) => Ok(format!(
                "configuration saved to {}: {outcome}",
                self.path.display()
            )),
            Err(WriteBackError::Conflict(c)) => {
                warn_conflict(&c, "saveConfig");
                Err(format!(
                    "{}: edited on disk since it was loaded; not overwritten (both differences are on the admin page)",
                    c.path.display()
                ))
            }
            Err(error) => Err(error.to_string()),
        }
    }
}

/// Logs a conflict `by` (the configCheck manager or `saveConfig`) met.
fn warn_conflict(c: &Conflict, by: &'static str) {
    tracing::warn!(
        by,
        config = %c.path.display(),
        file_vs_boot = %redact_passwords(&c.file_vs_boot),
        running_vs_boot = %redact_passwords(&c.running_vs_boot),
        "config file edited on disk since it was loaded: not overwritten (reload it, or undo the edit)"
    );
}

/// The configCheck manager: every `interval`, if the running configuration
/// differs from what the file holds, writes it back. The interval and the enable
/// flag are read from the running configuration every round, so a reload changes
/// them live. Logs each write, and a conflict or an error once when it appears
/// (not at every tick). Ends when `shutdown` is cancelled.
pub async fn run_config_check(
    writeback: Arc<WriteBack>,
    running: impl Fn() -> Arc<Config>,
    shutdown: CancellationToken,
) {
    // The problem last reported, so each is logged once.
    let mut reported: Option<String> = None;
    loop {
        // Shared, not copied: this runs every second on the admin plane's runtime.
        let settings = running().manager.config_check;
        // A disabled manager looks every second whether a reload enabled it.
        let pause = if settings.enable {
            settings.interval
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let running = running();
        if !running.manager.config_check.enable || writeback.is_saved(&running) {
            continue;
        }
        let wb = writeback.clone();
        let result = match tokio::task::spawn_blocking(move || wb.save(&running)).await {
            Ok(result) => result,
            Err(error) => {
                tracing::error!(%error, "config write-back task failed");
                continue;
            }
        };
        match result {
            Ok(_) => {
                if reported.take().is_some() {
                    tracing::info!(config = %writeback.path().display(), "config write-back resumed");
                }
            }
            Err(error) => {
                let key = error.to_string();
                if reported.as_ref() == Some(&key) {
                    continue;
                }
                match &error {
                    WriteBackError::Conflict(c) => warn_conflict(c, "configCheck"),
                    other => {
                        tracing::error!(error = %other, source = ?std::error::Error::source(other), "config write-back failed")
                    }
                }
                reported = Some(key);
            }
        }
    }
}

/// Loads `path` for write-back: its text and the configuration it holds.
pub fn load(path: &Path) -> Result<(String, Config), ConfigError> {
    let text = super::read_text(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let config = Config::from_text(path, &text)?;
    Ok((text, config))
}

#[cfg(test)]
mod tests;

/// `text` (a configuration or a diff of one, XML or TOML) with the value of
/// every `password` attribute or key replaced by `…`: for logging conflicts
/// without the users' password hashes.
pub fn redact_passwords(text: &str) -> String {
    const KEY: &str = "password";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let (before, from_key) = rest.split_at(at + KEY.len());
        out.push_str(before);
        let after_eq = from_key.trim_start_matches([' ', '\t']);
        let Some(after_eq) = after_eq.strip_prefix('=') else {
            rest = from_key;
            continue;
        };
        let value = after_eq.trim_start_matches([' ', '\t']);
        let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            rest = from_key;
            continue;
        };
        let Some(end) = value[1..].find([quote, '\n']) else {
            rest = from_key;
            continue;
        };
        out.push_str(&from_key[..from_key.len() - value.len()]);
        out.push(quote);
        out.push('…');
        out.push(quote);
        // Past the closing quote (or up to the end of the line when unclosed).
        let close = 1 + end;
        rest = if value[close..].starts_with(quote) {
            &value[close + 1..]
        } else {
            &value[close..]
        };
    }
    out.push_str(rest);
    out
}
