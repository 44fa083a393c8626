//! Files on the operator's workstation: the device's atomic writer with the
//! path attached to every error.
//!
//! [`write_atomic`] is `flor_vertex::file::write_atomic`, the one
//! implementation flor and retectl share: a temporary file in the target
//! directory, created with its mode (on Windows: a private ACL for
//! [`MODE_SECRET`]), fsync, rename over the target, fsync the directory. A
//! crash at any instant leaves the old file or the new one, never a mix, and a
//! private key is never visible with a looser mode than 0600.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flor_vertex::file;

/// Mode for private keys and Flow A bundles (which hold keys).
pub const MODE_SECRET: u32 = file::MODE_PRIVATE;
/// Mode for certificates and artifacts.
pub const MODE_PUBLIC: u32 = file::MODE_PUBLIC;

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
    file::write_atomic(path, bytes, mode).map_err(io_at(path))
}

/// Like [`write_atomic`] but refuses to replace an existing file.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    if path.exists() {
        return Err(FsError::Exists(path.to_path_buf()));
    }
    write_atomic(path, bytes, mode)
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
    std::fs::read_to_string(path).map_err(io_at(path))
}
