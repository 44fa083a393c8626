//! Atomic file writes for the operator's workstation.
//!
//! Same idea as the device's `fsutil::write_atomic`: write a temporary file in
//! the target directory, fsync it, set its mode, rename it over the target.
//! A crash at any instant leaves the old file or the new one, never a mix, and
//! a private key is never visible with a looser mode than 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Mode for private keys and Flow A bundles (which hold keys).
pub const MODE_SECRET: u32 = 0o600;
/// Mode for certificates and artifacts.
pub const MODE_PUBLIC: u32 = 0o644;

/// Why a file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An I/O call failed on a path.
    // Not a `source`: the message already says it, and `{:#}` would print it twice.
    #[error("{path}: {error}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The file exists and this command does not overwrite.
    #[error("{0}: already exists; refusing to overwrite")]
    Exists(PathBuf),
}

/// Attaches a path to an I/O error.
pub fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |error| FsError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes `bytes` to `path` atomically with `mode`, creating parent directories.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    // A bare file name (`--out laptop.bundle.json`) has an empty parent: ".".
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = open_new(&tmp, mode)?;
        f.write_all(bytes).map_err(io_at(&tmp))?;
        f.sync_all().map_err(io_at(&tmp))?;
        fs::rename(&tmp, path).map_err(io_at(path))?;
        // The rename is durable only once the directory entry is.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Like [`write_atomic`] but refuses to replace an existing file.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    if path.exists() {
        return Err(FsError::Exists(path.to_path_buf()));
    }
    write_atomic(path, bytes, mode)
}

fn open_new(path: &Path, mode: u32) -> Result<File, FsError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    opts.open(path).map_err(io_at(path))
}

/// Appends one line to a log file (created 0644 if absent). One `write` call
/// per line, so concurrent appends do not interleave within a line.
pub fn append_line(path: &Path, line: &str) -> Result<(), FsError> {
    let mut opts = OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(MODE_PUBLIC);
    }
    let mut f = opts.open(path).map_err(io_at(path))?;
    let mut buf = line.to_owned();
    buf.push('\n');
    f.write_all(buf.as_bytes()).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

/// Reads a file to a string, naming the path on failure.
pub fn read_string(path: &Path) -> Result<String, FsError> {
    fs::read_to_string(path).map_err(io_at(path))
}
