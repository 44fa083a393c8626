//! The live pointer: which numbered generation directory is current.
//!
//! The agent's installed artifacts (`mgmt -> gen/<v>`) and the config-server's
//! published tree (`tree -> trees/<n>`) both keep whole generations side by
//! side and switch between them with one atomic rename, so a crash leaves the
//! old or the new generation live, never a mix.
//!
//! On Unix the pointer is a symlink, so a person can `cat mgmt/agent.json`.
//! On Windows it is a small file `<name>.live` holding the generation number:
//! creating a symlink there needs a privilege ordinary accounts lack, and a
//! directory link cannot be renamed over another one. Both are written to a
//! temporary name and renamed over the old pointer.

use std::io;
use std::path::{Path, PathBuf};

/// A pointer `<root>/<name>` to one of the directories `<root>/<gens>/<n>`.
#[derive(Clone, Copy, Debug)]
pub struct Live<'a> {
    /// Directory holding the pointer and the generations directory.
    pub root: &'a Path,
    /// The pointer's name (`mgmt`, `tree`).
    pub name: &'static str,
    /// The generations directory's name (`gen`, `trees`).
    pub gens: &'static str,
}

impl Live<'_> {
    /// The number of the generation the pointer names, if any.
    pub fn read(&self) -> Option<u64> {
        imp::read(self)
    }

    /// Points at generation `n` with one atomic rename (and makes it durable).
    pub fn point(&self, n: u64) -> io::Result<()> {
        imp::point(self, n)
    }

    /// Where `rel` (a path inside the live generation) is; `None` while nothing is live.
    pub fn resolve(&self, rel: &Path) -> Option<PathBuf> {
        imp::resolve(self, rel)
    }

    /// Reads `rel` in the live generation, refusing more than `max` bytes;
    /// `NotFound` while nothing is live.
    pub fn read_bounded(&self, rel: &Path, max: usize) -> io::Result<Vec<u8>> {
        match self.resolve(rel) {
            Some(path) => flor_vertex::file::read_bounded(&path, max),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    /// The directory of generation `n`.
    pub fn gen_dir(&self, n: u64) -> PathBuf {
        self.root.join(self.gens).join(n.to_string())
    }
}

#[cfg(not(unix))]
use pointer_file as imp;
#[cfg(unix)]
use symlink as imp;

#[cfg(unix)]
mod symlink {
    use super::*;
    use std::fs;

    pub fn read(l: &Live) -> Option<u64> {
        let target = fs::read_link(l.root.join(l.name)).ok()?;
        target.strip_prefix(l.gens).ok()?.to_str()?.parse().ok()
    }

    pub fn point(l: &Live, n: u64) -> io::Result<()> {
        let tmp = l
            .root
            .join(format!(".{}.tmp.{}", l.name, std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new(l.gens).join(n.to_string()), &tmp)?;
        fs::rename(&tmp, l.root.join(l.name))?;
        flor_vertex::file::sync_dir(l.root)
    }

    pub fn resolve(l: &Live, rel: &Path) -> Option<PathBuf> {
        // The kernel follows the link at open time: no window between reading
        // the pointer and opening the file.
        Some(l.root.join(l.name).join(rel))
    }
}

/// The pointer-file form, used on Windows and unit-tested everywhere.
#[cfg(any(not(unix), test))]
mod pointer_file {
    use super::*;

    /// Longest pointer file read (a decimal u64 and a newline).
    const MAX_POINTER: usize = 32;

    fn file(l: &Live) -> PathBuf {
        l.root.join(format!("{}.live", l.name))
    }

    pub fn read(l: &Live) -> Option<u64> {
        let bytes = flor_vertex::file::read_bounded(&file(l), MAX_POINTER).ok()?;
        std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
    }

    pub fn point(l: &Live, n: u64) -> io::Result<()> {
        flor_vertex::file::write_atomic(&file(l), format!("{n}\n").as_bytes(), 0o644)
    }

    pub fn resolve(l: &Live, rel: &Path) -> Option<PathBuf> {
        Some(l.gen_dir(read(l)?).join(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn check(
        read: fn(&Live) -> Option<u64>,
        point: fn(&Live, u64) -> io::Result<()>,
        resolve: fn(&Live, &Path) -> Option<PathBuf>,
        tag: &str,
    ) {
        let root = std::env::temp_dir().join(format!("flor-live-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let l = Live {
            root: &root,
            name: "mgmt",
            gens: "gen",
        };
        fs::create_dir_all(l.gen_dir(6)).unwrap();
        fs::create_dir_all(l.gen_dir(7)).unwrap();
        fs::write(l.gen_dir(6).join("agent.json"), "six").unwrap();
        fs::write(l.gen_dir(7).join("agent.json"), "seven").unwrap();
        assert_eq!(read(&l), None, "nothing live before the first switch");
        point(&l, 6).unwrap();
        assert_eq!(read(&l), Some(6));
        let p = resolve(&l, Path::new("agent.json")).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "six");
        point(&l, 7).unwrap();
        assert_eq!(read(&l), Some(7));
        let p = resolve(&l, Path::new("agent.json")).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "seven");
        let names: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(
            names.is_empty(),
            "temporary pointers left behind: {names:?}"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_platform_pointer_switches_between_generations() {
        check(imp::read, imp::point, imp::resolve, "native");
    }

    #[test]
    fn the_windows_pointer_file_switches_between_generations() {
        check(
            pointer_file::read,
            pointer_file::point,
            pointer_file::resolve,
            "file",
        );
    }

    #[test]
    fn a_damaged_pointer_file_reads_as_nothing_live() {
        let root = std::env::temp_dir().join(format!("flor-live-bad-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let l = Live {
            root: &root,
            name: "tree",
            gens: "trees",
        };
        fs::write(root.join("tree.live"), "seven\n").unwrap();
        assert_eq!(pointer_file::read(&l), None);
        fs::write(root.join("tree.live"), vec![b'9'; 100]).unwrap();
        assert_eq!(
            pointer_file::read(&l),
            None,
            "an oversized pointer is refused"
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
