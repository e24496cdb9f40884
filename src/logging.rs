//! Log output: stderr, or a file that can be closed and reopened for rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An append-mode log file shared by every log line; [`LogFile::reopen`] lets
/// logrotate move the old file away (the legacy `closeLog` call).
#[derive(Debug, Clone)]
pub struct LogFile {
    path: PathBuf,
    /// Written by every log line and by `reopen`; a lock is fine here, logging is
    /// off the per-byte path and lines are rare.
    file: Arc<Mutex<File>>,
}

impl LogFile {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(open_append(path)?)),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the file and opens `path` again (a new file if it was moved away).
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One log line's writer: holds the lock while the line is written.
#[derive(Debug)]
pub struct LogFileWriter<'a>(std::sync::MutexGuard<'a, File>);

impl Write for LogFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self.file.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
