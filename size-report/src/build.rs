//! Turns a board into a cargo invocation and runs it: the one place that knows
//! how `flor` is cross-built (ci/cross.sh and the report both come here).
//!
//! The cargo, rustc and linkers come from `PATH`: source `cross/env.sh` first
//! (Debian's rustc-web with `RUSTC_BOOTSTRAP=1`, zig wrappers, cross gcc).
//! Every variant gets its own cargo target dir under `target/cross/`, because
//! RUSTFLAGS differ between variants and would otherwise rebuild each other.
//!
//! Output: `target/boards/<board>/<variant>/flor` (stripped: what ships and what
//! qemu runs) and `flor.symbols` (same build with its symbol table, for nm).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::board::Board;

/// Which build of a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// What ships: the board's rustflags plus its release_rustflags.
    Release,
    /// Keeps panic messages, locations and `{:?}` output: without release_rustflags.
    Diagnostic,
    /// The release build with rustc's default relocation model (PIC) instead of
    /// `-Crelocation-model=static`: kept to re-check the static-PIE trap.
    Pic,
}

impl Variant {
    /// Name on the command line and in paths.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Release => "release",
            Variant::Diagnostic => "diagnostic",
            Variant::Pic => "pic",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<Variant, BuildError> {
        match s {
            "release" => Ok(Variant::Release),
            "diagnostic" => Ok(Variant::Diagnostic),
            "pic" => Ok(Variant::Pic),
            _ => Err(BuildError::UnknownVariant(s.to_owned())),
        }
    }
}

/// Changes on top of a board's profile, for measuring what each size trick saves.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Label used as the output directory name instead of the variant's.
    pub label: Option<String>,
    /// `CARGO_PROFILE_RELEASE_*` settings, e.g. `("OPT_LEVEL", "3")`.
    pub profile: Vec<(&'static str, String)>,
    /// Replaces the board's rustflags + release_rustflags when set.
    pub rustflags: Option<Vec<String>>,
    /// Replaces the board's build_std_features when set.
    pub build_std_features: Option<String>,
    /// Cargo features added to the board's (e.g. `log/release_max_level_warn`).
    pub features: Vec<String>,
}

/// Where a finished build is.
#[derive(Debug, Clone)]
pub struct Built {
    /// Stripped binary: what ships, what qemu runs, what counts against the budget.
    pub stripped: PathBuf,
    /// The same link with its symbol table.
    pub symbols: PathBuf,
}

/// Why a build failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A tool could not be started.
    Spawn(String, std::io::Error),
    /// A tool ran and failed.
    Failed(String, std::process::ExitStatus),
    /// Copying the output failed.
    Io(PathBuf, std::io::Error),
    /// A variant name on the command line is not one of [`Variant`]'s.
    UnknownVariant(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Spawn(what, e) => write!(
                f,
                "could not run {what}: {e} (run cross/setup.sh, then `source cross/env.sh`)"
            ),
            BuildError::Failed(what, st) => write!(f, "{what} failed: {st}"),
            BuildError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            BuildError::UnknownVariant(s) => {
                write!(f, "unknown variant {s:?}; use release, diagnostic or pic")
            }
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Spawn(_, e) | BuildError::Io(_, e) => Some(e),
            BuildError::Failed(..) | BuildError::UnknownVariant(_) => None,
        }
    }
}

/// The RUSTFLAGS a variant of a board is built with.
pub fn rustflags(board: &Board, variant: Variant) -> Vec<String> {
    let mut flags = board.rustflags.clone();
    match variant {
        Variant::Release => flags.extend(board.release_rustflags.iter().cloned()),
        Variant::Diagnostic => {}
        Variant::Pic => {
            flags.retain(|f| f != "-Crelocation-model=static");
            flags.extend(board.release_rustflags.iter().cloned());
        }
    }
    flags
}

/// `CC_mipsel_unknown_linux_musl`-style variable names.
fn target_env(prefix: &str, target: &str, upper: bool) -> String {
    let t = target.replace('-', "_");
    format!("{prefix}{}", if upper { t.to_ascii_uppercase() } else { t })
}

/// `cargo build` and its arguments for `flor` on `board`, without the jobs or
/// the environment: the native build below and ci/cross.sh's cross-rs build
/// (`size-report env`'s `BOARD_CARGO_ARGS`) both use exactly these.
pub fn cargo_build_args(
    board: &Board,
    std_features: &str,
    extra_features: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "build",
        "--release",
        "--locked",
        "-p",
        "flor",
        "--bin",
        "flor",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--target".to_owned(), board.target.clone()]);
    args.push(format!("-Zbuild-std={}", board.build_std));
    if !std_features.is_empty() {
        args.push(format!("-Zbuild-std-features={std_features}"));
    }
    // A board names every feature it carries: flor's defaults (the `mgmt`
    // roles) are for the native x86_64 builds, not for a router's flash.
    args.push("--no-default-features".to_owned());
    let features: Vec<&str> = board
        .features
        .iter()
        .chain(extra_features)
        .map(|f| f.as_str())
        .collect();
    if !features.is_empty() {
        args.push("--features".to_owned());
        args.push(features.join(","));
    }
    args
}

/// The cargo command that builds `flor` for `board`.
pub fn cargo_command(
    workspace: &Path,
    board: &Board,
    variant: Variant,
    ov: &Overrides,
    jobs: u32,
) -> (Command, PathBuf) {
    let label = ov
        .label
        .clone()
        .unwrap_or_else(|| variant.name().to_owned());
    let target_dir = workspace.join("target/cross").join(&label);
    let flags = ov
        .rustflags
        .clone()
        .unwrap_or_else(|| rustflags(board, variant));
    let std_features = ov
        .build_std_features
        .clone()
        .unwrap_or_else(|| board.build_std_features.clone());

    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace)
        .args(cargo_build_args(board, &std_features, &ov.features))
        .arg("-j")
        .arg(jobs.to_string());
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        // Exact flags, no word splitting (0x1f is cargo's separator).
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"))
        .env_remove("RUSTFLAGS")
        .env(
            target_env("CARGO_TARGET_", &board.target, true) + "_LINKER",
            &board.linker,
        )
        .env(target_env("CC_", &board.target, false), &board.linker)
        .env(target_env("AR_", &board.target, false), &board.ar)
        // Keep the symbol table; we strip a copy ourselves so nm can attribute bytes.
        .env("CARGO_PROFILE_RELEASE_STRIP", "false")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    for (k, v) in &ov.profile {
        cmd.env(format!("CARGO_PROFILE_RELEASE_{k}"), v);
    }
    let out = target_dir.join(&board.target).join("release/flor");
    (cmd, out)
}

/// Builds `flor` for a board and leaves the stripped and symbol copies under
/// `target/boards/<board>/<label>/`.
pub fn build(
    workspace: &Path,
    board: &Board,
    variant: Variant,
    ov: &Overrides,
    jobs: u32,
) -> Result<Built, BuildError> {
    let (mut cmd, out) = cargo_command(workspace, board, variant, ov, jobs);
    let what = format!("cargo build for {} ({})", board.name, variant.name());
    // The exact command, so a reader can repeat any number in the report.
    eprintln!("size-report: {}", describe(&cmd));
    let st = cmd
        .status()
        .map_err(|e| BuildError::Spawn("cargo".into(), e))?;
    if !st.success() {
        return Err(BuildError::Failed(what, st));
    }
    let label = ov
        .label
        .clone()
        .unwrap_or_else(|| variant.name().to_owned());
    let dir = workspace
        .join("target/boards")
        .join(&board.name)
        .join(label);
    std::fs::create_dir_all(&dir).map_err(|e| BuildError::Io(dir.clone(), e))?;
    let symbols = dir.join("flor.symbols");
    let stripped = dir.join("flor");
    std::fs::copy(&out, &symbols).map_err(|e| BuildError::Io(out.clone(), e))?;
    if board.strip {
        strip(&symbols, &stripped)?;
    } else {
        // Ships as linked (a macOS board: its ad-hoc signature covers the symbols).
        std::fs::copy(&symbols, &stripped).map_err(|e| BuildError::Io(symbols.clone(), e))?;
    }
    Ok(Built { stripped, symbols })
}

/// Writes `output`: `input` as it ships, without symbols. Every build that is
/// compared with a board's (cross-rs in ci/cross.sh --docker) is stripped here.
pub fn strip(input: &Path, output: &Path) -> Result<(), BuildError> {
    // binutils-multiarch's strip handles every board's ELF. Beyond symbols it
    // drops two sections nothing loads: `.pdr` (MIPS procedure descriptors for
    // debuggers; LLVM emits them for every function: 152,568 bytes, 10% of the
    // mipsel build) and `.comment` (compiler version strings).
    let mut strip = Command::new("strip");
    strip
        .arg("--strip-all")
        .arg("--remove-section=.pdr")
        .arg("--remove-section=.comment")
        .arg("-o")
        .arg(output)
        .arg(input);
    run(strip, "strip")
}

/// Where a previous `build` left its files (for `report --no-build`).
pub fn existing(workspace: &Path, board: &Board, variant: Variant) -> Built {
    let dir = workspace
        .join("target/boards")
        .join(&board.name)
        .join(variant.name());
    Built {
        stripped: dir.join("flor"),
        symbols: dir.join("flor.symbols"),
    }
}

/// Runs a tool, turning failure into a `BuildError`.
pub fn run(mut cmd: Command, what: &str) -> Result<(), BuildError> {
    let st = cmd
        .status()
        .map_err(|e| BuildError::Spawn(what.into(), e))?;
    if st.success() {
        Ok(())
    } else {
        Err(BuildError::Failed(what.into(), st))
    }
}

/// Runs a tool and returns its stdout.
pub fn output(mut cmd: Command, what: &str) -> Result<String, BuildError> {
    let out = cmd
        .output()
        .map_err(|e| BuildError::Spawn(what.into(), e))?;
    if !out.status.success() {
        return Err(BuildError::Failed(what.into(), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command with its environment, as a shell line a person can repeat.
pub fn describe(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let v: OsString = v.to_owned();
            s.push_str(&format!(
                "{}={} ",
                k.to_string_lossy(),
                v.to_string_lossy().replace('\u{1f}', " ")
            ));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(name: &str) -> Board {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../boards/{name}.toml"));
        Board::load(&p).unwrap()
    }

    #[test]
    fn variants_differ_only_in_what_they_say() {
        let b = board("openwrt-mipsel");
        let rel = rustflags(&b, Variant::Release);
        let diag = rustflags(&b, Variant::Diagnostic);
        let pic = rustflags(&b, Variant::Pic);
        assert!(rel.contains(&"-Cpanic=immediate-abort".to_string()));
        assert!(!diag.contains(&"-Cpanic=immediate-abort".to_string()));
        assert!(diag.contains(&"-Crelocation-model=static".to_string()));
        assert!(!pic.contains(&"-Crelocation-model=static".to_string()));
        assert_eq!(pic.len() + 1, rel.len());
    }

    #[test]
    fn cargo_command_sets_linker_cc_and_target() {
        let b = board("openwrt-mipsel");
        let (cmd, out) = cargo_command(
            Path::new("/w"),
            &b,
            Variant::Release,
            &Overrides::default(),
            2,
        );
        let d = describe(&cmd);
        assert!(
            d.contains(
                "CARGO_TARGET_MIPSEL_UNKNOWN_LINUX_MUSL_LINKER=zigcc-mipsel-unknown-linux-musl"
            ),
            "{d}"
        );
        assert!(
            d.contains("CC_mipsel_unknown_linux_musl=zigcc-mipsel-unknown-linux-musl"),
            "{d}"
        );
        assert!(d.contains("--target mipsel-unknown-linux-musl"), "{d}");
        assert!(d.contains("-Zbuild-std=std,panic_abort"), "{d}");
        assert_eq!(
            out,
            Path::new("/w/target/cross/release/mipsel-unknown-linux-musl/release/flor")
        );
    }

    #[test]
    fn unknown_variant_is_refused() {
        assert!(Variant::parse("small")
            .unwrap_err()
            .to_string()
            .contains("release, diagnostic or pic"));
    }
}
