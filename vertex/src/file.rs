//! Files written atomically and read with a bound (feature `file`).
//!
//! The one implementation `flor` (agent, config-server), `retectl` and
//! `size-report` share. A crash at any instant leaves the old or the new
//! content of a file, never a mix, and a key is never readable by others, not
//! even for the instant between creating and restricting it:
//!
//! ```text
//! write_atomic(path, bytes, mode)
//!     <dir>/.<name>.tmp.<pid>   created with `mode` (Unix) / a private ACL (Windows)
//!     -> write, fsync -> rename over <path> -> fsync <dir> (Unix)
//! ```
//!
//! It also finds the flor home ([`flor_home`]): which directory a command uses
//! is a question about files on this host, and flor and retectl must agree.
//!
//! This is the only I/O in the crate besides `net`; the sans-IO default build
//! does not compile it.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::make_private;

/// The mode of a file only its owner may read: keys, bundles, cookies.
pub const MODE_PRIVATE: u32 = 0o600;
/// The mode of a file anyone may read: certificates, artifacts, reports.
pub const MODE_PUBLIC: u32 = 0o644;

/// The flor home on a Unix host ([`crate::contract::choose_home`] with what
/// this process sees). Windows callers use `%ProgramData%\Florete` unless
/// `FLOR_HOME` is set.
pub fn flor_home() -> std::path::PathBuf {
    use crate::contract;
    contract::choose_home(
        std::env::var_os(contract::HOME_ENV).map(Into::into),
        system_home_writable(),
        std::env::var_os("HOME").map(Into::into),
    )
}

/// Whether the packages' system home exists and this process may write it
/// (access(2): root, or a user the package made it writable for).
fn system_home_writable() -> bool {
    #[cfg(unix)]
    {
        rustix::fs::access(crate::contract::SYSTEM_HOME, rustix::fs::Access::WRITE_OK).is_ok()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory,
/// fsync, rename over the target, fsync the directory. Parent directories are
/// created. `mode` applies to the new file before any byte is written (so a
/// key is never world-readable); on Windows a mode that gives group and others
/// nothing makes the file private to its owner, SYSTEM and Administrators
/// ([`make_private`]).
///
/// # Errors
/// The first failing file operation's error; the temp file is removed then.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    fs::create_dir_all(dir)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        let mut f = opts.open(&tmp)?;
        #[cfg(windows)]
        if mode & 0o077 == 0 {
            make_private(&tmp)?;
        }
        #[cfg(not(any(unix, windows)))]
        let _ = mode;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a directory's entries durable (a rename in it survives a power cut).
///
/// Windows cannot flush a directory handle; NTFS journals its metadata itself.
///
/// # Errors
/// The directory cannot be opened or flushed.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    return fs::File::open(dir)?.sync_all();
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The directory a file lives in; a bare file name (empty parent) lives in ".".
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Reads a file, refusing one larger than `max` bytes (outside input is bounded).
///
/// # Errors
/// The file's own I/O errors; [`io::ErrorKind::InvalidData`] when it is larger than `max`.
pub fn read_bounded(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let f = fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file is larger than the limit for its kind",
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn atomic_write_replaces_and_sets_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("flor-file-{}", std::process::id()));
        let p = dir.join("sub/key.pem");
        write_atomic(&p, b"one", MODE_PRIVATE).unwrap();
        write_atomic(&p, b"two", MODE_PRIVATE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(p.parent().unwrap()).unwrap().count(),
            1,
            "no temp file left behind"
        );
        assert!(read_bounded(&p, 2).is_err());
        assert_eq!(read_bounded(&p, 3).unwrap(), b"two");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        // The target is a directory: the rename fails after the temp file was written.
        let dir = std::env::temp_dir().join(format!("flor-file-fail-{}", std::process::id()));
        let target = dir.join("taken");
        fs::create_dir_all(target.join("inside")).unwrap();
        assert!(write_atomic(&target, b"x", MODE_PUBLIC).is_err());
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "only `taken` remains"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        // `flor id create --out alpha.csr.json` writes next to the caller.
        assert_eq!(parent_dir(Path::new("alpha.csr.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("out/a.json")), Path::new("out"));
        assert_eq!(parent_dir(Path::new("/a.json")), Path::new("/"));
    }
}
