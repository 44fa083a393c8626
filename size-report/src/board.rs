//! Board profiles: one `boards/<name>.toml` per board (see `boards/README.md`).
//!
//! A board names the Rust target, how the binary links, the flash budget `flor`
//! must fit and the options it is built with. This module only reads and checks
//! the files; `build` turns a board into a cargo invocation.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One board profile, as written in `boards/<name>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// File stem and the name used on the command line.
    pub name: String,
    /// One line for tables.
    pub summary: String,
    /// Rust target triple.
    pub target: String,
    /// `musl`, `glibc`, or `libsystem` (macOS).
    pub libc: String,
    /// What `file` must report: `static` or `dynamic`.
    pub link: Link,
    /// Linker, also used as the target C compiler (ring's C and assembly).
    pub linker: String,
    /// Archiver for the target's C objects.
    pub ar: String,
    /// `-Z build-std=` crates.
    pub build_std: String,
    /// `-Z build-std-features=`.
    #[serde(default)]
    pub build_std_features: String,
    /// RUSTFLAGS every variant gets.
    #[serde(default)]
    pub rustflags: Vec<String>,
    /// RUSTFLAGS only the shipped (`release`) variant gets.
    #[serde(default)]
    pub release_rustflags: Vec<String>,
    /// Cargo features of `flor`.
    #[serde(default)]
    pub features: Vec<String>,
    /// Stripped `flor` must be at most this many bytes.
    pub flash_budget_bytes: u64,
    /// Resident memory agent + vertex may use on the board.
    pub ram_budget_kib: u64,
    /// How to run the binary on the build host; none for a board nothing here
    /// can run (macOS): it is built, checked with `file` and measured only.
    #[serde(default)]
    pub qemu: Option<Qemu>,
    /// Whether the shipped binary is stripped. macOS boards keep their symbols:
    /// zig's linker signs the Mach-O ad hoc, which Apple silicon requires, and
    /// stripping afterwards would void that signature.
    #[serde(default = "yes")]
    pub strip: bool,
    /// What `file` must say.
    pub file: FileExpect,
    /// The real hardware this profile stands for (free text, shown in reports).
    pub hardware: toml::Table,
}

fn yes() -> bool {
    true
}

/// How a board's binary links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    /// No interpreter, no shared libraries.
    Static,
    /// Linked against the OS's libc.
    Dynamic,
}

/// qemu-user settings for a board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    /// qemu-user binary, e.g. `qemu-mipsel-static`.
    pub binary: String,
    /// `QEMU_CPU`: the oldest core of the class.
    pub cpu: String,
    /// `QEMU_LD_PREFIX` for dynamic (glibc) boards, empty for static ones.
    #[serde(default)]
    pub ld_prefix: String,
}

/// Substrings `file` must print for the shipped binary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExpect {
    /// Every one must appear.
    pub expect: Vec<String>,
}

/// Why a board profile could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum BoardError {
    /// The file could not be read.
    Read(PathBuf, std::io::Error),
    /// The TOML did not parse or did not match the profile's shape.
    Parse(PathBuf, toml::de::Error),
    /// `name` inside the file differs from the file name.
    NameMismatch(PathBuf, String),
    /// A field has a value the tools cannot use.
    Invalid(PathBuf, &'static str),
    /// No `boards/<name>.toml`.
    Unknown(String, Vec<String>),
}

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoardError::Read(p, e) => write!(f, "{}: {e}", p.display()),
            BoardError::Parse(p, e) => write!(f, "{}: {e}", p.display()),
            BoardError::NameMismatch(p, n) => {
                write!(f, "{}: name = {n:?} must equal the file name", p.display())
            }
            BoardError::Invalid(p, why) => write!(f, "{}: {why}", p.display()),
            BoardError::Unknown(n, known) => {
                write!(f, "no board {n:?}; known: {}", known.join(", "))
            }
        }
    }
}

impl std::error::Error for BoardError {}

impl Board {
    /// Reads and checks one profile file.
    pub fn load(path: &Path) -> Result<Board, BoardError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| BoardError::Read(path.to_owned(), e))?;
        let board: Board =
            toml::from_str(&text).map_err(|e| BoardError::Parse(path.to_owned(), e))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if board.name != stem {
            return Err(BoardError::NameMismatch(path.to_owned(), board.name));
        }
        let invalid = |why| Err(BoardError::Invalid(path.to_owned(), why));
        if board.flash_budget_bytes == 0 {
            return invalid("flash_budget_bytes must be > 0");
        }
        if !matches!(board.libc.as_str(), "musl" | "glibc" | "libsystem") {
            return invalid("libc must be \"musl\", \"glibc\" or \"libsystem\"");
        }
        if let Some(q) = &board.qemu {
            if board.libc == "glibc" && q.ld_prefix.is_empty() {
                return invalid("a glibc board needs qemu.ld_prefix (its libc's sysroot)");
            }
        }
        if board.file.expect.is_empty() {
            return invalid("file.expect must name at least the architecture");
        }
        Ok(board)
    }

    /// Every board in `dir`, sorted by name.
    pub fn load_all(dir: &Path) -> Result<Vec<Board>, BoardError> {
        let mut boards = Vec::new();
        for path in board_files(dir)? {
            boards.push(Board::load(&path)?);
        }
        Ok(boards)
    }

    /// The boards named, in the order given; all boards when `names` is empty.
    pub fn select(dir: &Path, names: &[String]) -> Result<Vec<Board>, BoardError> {
        let all = Board::load_all(dir)?;
        if names.is_empty() {
            return Ok(all);
        }
        names
            .iter()
            .map(|n| {
                all.iter().find(|b| &b.name == n).cloned().ok_or_else(|| {
                    BoardError::Unknown(n.clone(), all.iter().map(|b| b.name.clone()).collect())
                })
            })
            .collect()
    }

    /// Shell assignments for ci/cross.sh (`eval "$(size-report env <board>)"`).
    pub fn shell_env(&self) -> String {
        let mut out = String::new();
        let mut put = |k: &str, v: &str| {
            out.push_str(k);
            out.push('=');
            out.push_str(&shell_quote(v));
            out.push('\n');
        };
        put("BOARD_TARGET", &self.target);
        put("BOARD_LIBC", &self.libc);
        put(
            "BOARD_LINK",
            match self.link {
                Link::Static => "static",
                Link::Dynamic => "dynamic",
            },
        );
        put("BOARD_LINKER", &self.linker);
        put("BOARD_AR", &self.ar);
        // The shipped build's flags, for images that set CARGO_TARGET_<T>_RUSTFLAGS.
        let mut flags = self.rustflags.clone();
        flags.extend(self.release_rustflags.iter().cloned());
        put("BOARD_RUSTFLAGS", &flags.join(" "));
        // Empty BOARD_QEMU: nothing here runs this board's binary.
        let q = self.qemu.clone().unwrap_or(Qemu {
            binary: String::new(),
            cpu: String::new(),
            ld_prefix: String::new(),
        });
        put("BOARD_QEMU", &q.binary);
        put("BOARD_QEMU_CPU", &q.cpu);
        put("BOARD_QEMU_LD_PREFIX", &q.ld_prefix);
        put("BOARD_FLASH_BUDGET", &self.flash_budget_bytes.to_string());
        let expect: Vec<String> = self.file.expect.iter().map(|s| shell_quote(s)).collect();
        out.push_str(&format!("BOARD_FILE_EXPECT=({})\n", expect.join(" ")));
        out
    }
}

impl Board {
    /// `cross/Dockerfile.<target>`: the toolchain image plus this board's
    /// linker, C compiler, rustflags and qemu runner, in one ENV instruction
    /// (each instruction is a layer commit, ~35 s on fuse-overlayfs here).
    /// The committed files are checked against this by a unit test.
    pub fn dockerfile(&self) -> String {
        let up = self.target.replace('-', "_").to_ascii_uppercase();
        let low = self.target.replace('-', "_");
        let mut flags = self.rustflags.clone();
        flags.extend(self.release_rustflags.iter().cloned());
        let mut env = vec![
            format!("CARGO_TARGET_{up}_LINKER={}", self.linker),
            format!("CC_{low}={}", self.linker),
            format!("AR_{low}={}", self.ar),
            format!("CARGO_TARGET_{up}_RUSTFLAGS=\"{}\"", flags.join(" ")),
        ];
        if let Some(q) = &self.qemu {
            env.push(format!("CARGO_TARGET_{up}_RUNNER={}", q.binary));
            env.push(format!("QEMU_CPU={}", q.cpu));
            if !q.ld_prefix.is_empty() {
                env.push(format!("QEMU_LD_PREFIX={}", q.ld_prefix));
            }
        }
        format!(
            "# florete/cross:{target} for board {name} ({summary}).\n\
             # Generated from boards/{name}.toml by `size-report dockerfile {name}`;\n\
             # a unit test keeps the two equal. Build (after cross/Dockerfile):\n\
             #   docker build -t florete/cross:{target} -f cross/Dockerfile.{target} cross/\n\
             # Per-target variables only: host builds inside the image stay native.\n\
             FROM florete/cross-base:bookworm\n\
             ENV {env}\n",
            target = self.target,
            name = self.name,
            summary = self.summary,
            env = env.join(" \\\n    "),
        )
    }
}

fn board_files(dir: &Path) -> Result<Vec<PathBuf>, BoardError> {
    let rd = std::fs::read_dir(dir).map_err(|e| BoardError::Read(dir.to_owned(), e))?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| BoardError::Read(dir.to_owned(), e))?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Single-quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boards_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards")
    }

    #[test]
    fn every_committed_board_loads() {
        let boards = Board::load_all(&boards_dir()).unwrap();
        let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "macos-aarch64",
                "macos-x86_64",
                "openwrt-aarch64",
                "openwrt-armv7",
                "openwrt-mips",
                "openwrt-mipsel",
                "openwrt-x86_64",
                "rpi-aarch64",
                "rpi-armv7"
            ]
        );
        for b in &boards {
            // Router boards are static musl; that is what OpenWrt can run without a loader match.
            if b.name.starts_with("openwrt-") {
                assert_eq!(
                    (b.libc.as_str(), b.link),
                    ("musl", Link::Static),
                    "{}",
                    b.name
                );
                assert!(
                    b.rustflags.iter().any(|f| f == "-Crelocation-model=static"),
                    "{}: router boards build non-PIE static (see boards/README.md)",
                    b.name
                );
            }
            // Every board runs under qemu-user in CI except macOS, which nothing
            // here emulates; macOS ships signed, hence unstripped.
            let mac = b.target.ends_with("-apple-darwin");
            assert_eq!(b.qemu.is_none(), mac, "{}: [qemu]", b.name);
            assert_eq!(b.strip, !mac, "{}: strip", b.name);
        }
    }

    #[test]
    fn mips_boards_are_held_to_one_and_a_half_mib() {
        // Issue 17: where flor stops crowding OpenWrt's own packages out of a 16 MiB flash.
        for name in ["openwrt-mips", "openwrt-mipsel"] {
            let b = Board::load(&boards_dir().join(format!("{name}.toml"))).unwrap();
            assert_eq!(b.flash_budget_bytes, 1024 * 1024 * 3 / 2);
        }
    }

    #[test]
    fn unknown_board_names_the_known_ones() {
        let err = Board::select(&boards_dir(), &["openwrt-x".into()]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("openwrt-x") && msg.contains("openwrt-mipsel"),
            "{msg}"
        );
    }

    #[test]
    fn shell_env_quotes_values() {
        assert_eq!(shell_quote("a'b c"), r"'a'\''b c'");
        let b = Board::load(&boards_dir().join("rpi-aarch64.toml")).unwrap();
        let env = b.shell_env();
        assert!(
            env.contains("BOARD_QEMU_LD_PREFIX='/usr/aarch64-linux-gnu'\n"),
            "{env}"
        );
        assert!(
            env.contains("BOARD_FILE_EXPECT=('ELF 64-bit LSB pie executable'"),
            "{env}"
        );
    }

    #[test]
    fn committed_dockerfiles_match_the_boards() {
        for b in Board::load_all(&boards_dir()).unwrap() {
            let p = boards_dir().join(format!("../cross/Dockerfile.{}", b.target));
            let committed = std::fs::read_to_string(&p).unwrap_or_default();
            assert_eq!(
                committed,
                b.dockerfile(),
                "{} is stale: size-report dockerfile {} > {}",
                p.display(),
                b.name,
                p.display()
            );
        }
    }

    #[test]
    fn bad_profile_is_a_readable_error() {
        let dir = std::env::temp_dir().join(format!("size-report-board-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.toml");
        std::fs::write(&p, "name = \"y\"\n").unwrap();
        let msg = Board::load(&p).unwrap_err().to_string();
        assert!(msg.contains("x.toml"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
