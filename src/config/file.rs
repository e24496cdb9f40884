//! Reading a configuration file without trusting what sits at its path: the
//! control plane reads it on reload, save and configCheck, and a FIFO there
//! would block the read until someone writes, a device or a huge file would
//! take all memory. Only a regular file of at most [`MAX_FILE_BYTES`] is read.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest configuration file read: 64 MiB holds several hundred thousand
/// hosts, and bounds what a mistaken path (a log, an image) can cost.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The text of the regular file at `path`. A FIFO, socket, device or directory
/// is refused without waiting (the open does not block), as is a file larger
/// than [`MAX_FILE_BYTES`] or one that is not UTF-8.
pub fn read_text(path: &Path) -> io::Result<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, socket, device or directory)",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = String::with_capacity(meta.len() as usize);
    // The file may grow between the stat and the read: never past the limit.
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {} MiB", MAX_FILE_BYTES / (1024 * 1024)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_and_refuses_the_rest_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.xml");
        std::fs::write(&file, "<config/>").unwrap();
        assert_eq!(read_text(&file).unwrap(), "<config/>");

        let fifo = dir.path().join("fifo.xml");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let e = read_text(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_text(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_text(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");

        let big = std::fs::File::create(dir.path().join("big.xml")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = read_text(&dir.path().join("big.xml")).unwrap_err();
        assert!(e.to_string().contains("larger than 64 MiB"), "{e}");
    }
}
