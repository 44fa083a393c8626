//! `size-report`: builds `flor` for the boards in `boards/`, prints a table of
//! stripped bytes against each board's flash budget with the largest
//! contributors, writes it as markdown and JSON, and exits non-zero when any
//! board is over budget.
//!
//! It is also the one place that turns a board profile into a cross build:
//! `ci/cross.sh` calls `size-report build <board>` and `size-report env <board>`
//! rather than repeating the recipe.
//!
//! ```text
//! boards/<name>.toml --build--> target/boards/<name>/<variant>/{flor, flor.symbols}
//!        --measure (size, nm)--> report.{md,json} + exit status
//! ```
//!
//! Run it with the cross toolchain on PATH: `cross/setup.sh; source cross/env.sh`.
//! A desktop/CI tool: never a dependency of flor.

mod board;
mod build;
mod report;
mod symbols;

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

use board::Board;
use build::{Overrides, Variant};

/// Builds flor per board and checks its size against each board's budget.
#[derive(FromArgs)]
struct Args {
    /// boards directory (default: <workspace>/boards)
    #[argh(option)]
    boards: Option<PathBuf>,
    /// parallel rustc jobs per build (default 2: the CI machines have 2 shared cores)
    #[argh(option, default = "2")]
    jobs: u32,
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    List(ListCmd),
    Dockerfile(DockerfileCmd),
    Build(BuildCmd),
    Env(EnvCmd),
    Strip(StripCmd),
    Report(ReportCmd),
    Ladder(LadderCmd),
}

/// Print the board names, one per line.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct ListCmd {}

/// Print cross/Dockerfile.<target> for a board.
#[derive(FromArgs)]
#[argh(subcommand, name = "dockerfile")]
struct DockerfileCmd {
    /// board name
    #[argh(positional)]
    board: String,
}

/// Build flor for one board; prints the stripped binary's path.
#[derive(FromArgs)]
#[argh(subcommand, name = "build")]
struct BuildCmd {
    /// board name (boards/<name>.toml)
    #[argh(positional)]
    board: String,
    /// release (ships), diagnostic (panic messages kept) or pic (rustc's default relocation model)
    #[argh(option, default = "String::from(\"release\")")]
    variant: String,
}

/// Print a board's settings as shell assignments (for ci/cross.sh).
#[derive(FromArgs)]
#[argh(subcommand, name = "env")]
struct EnvCmd {
    /// board name
    #[argh(positional)]
    board: String,
}

/// Strip a binary built elsewhere exactly as `build` strips a board's (so two
/// builds of one board compare byte for byte).
#[derive(FromArgs)]
#[argh(subcommand, name = "strip")]
struct StripCmd {
    /// the unstripped binary
    #[argh(positional)]
    input: PathBuf,
    /// where to write the stripped copy
    #[argh(positional)]
    output: PathBuf,
}

/// Build (release) and measure the boards; write report.md and report.json.
#[derive(FromArgs)]
#[argh(subcommand, name = "report")]
struct ReportCmd {
    /// boards to measure (default: all)
    #[argh(positional)]
    boards: Vec<String>,
    /// output directory (default: <workspace>/target/size-report)
    #[argh(option)]
    out: Option<PathBuf>,
    /// measure what the last `build` left instead of building
    #[argh(switch)]
    no_build: bool,
}

/// Measure what each size trick saves on one board, one build per step.
#[derive(FromArgs)]
#[argh(subcommand, name = "ladder")]
struct LadderCmd {
    /// board name
    #[argh(positional)]
    board: String,
    /// only these rows, e.g. `4,5,6` (default: all; each row is a full build)
    #[argh(option)]
    rows: Option<String>,
}

fn workspace() -> PathBuf {
    let ws = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    ws.canonicalize().unwrap_or(ws)
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("size-report: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ws = workspace();
    let boards_dir = args.boards.clone().unwrap_or_else(|| ws.join("boards"));
    match args.cmd {
        Cmd::List(_) => {
            for b in Board::load_all(&boards_dir)? {
                println!("{}", b.name);
            }
        }
        Cmd::Dockerfile(c) => print!("{}", one(&boards_dir, &c.board)?.dockerfile()),
        Cmd::Env(c) => {
            let b = one(&boards_dir, &c.board)?;
            print!("{}", b.shell_env());
            // The shipped build's cargo arguments, for builds that set the
            // environment themselves (cross-rs in the images: ci/cross.sh --docker).
            let args = build::cargo_build_args(&b, &b.build_std_features, &[]);
            let quoted: Vec<String> = args.iter().map(|a| board::shell_quote(a)).collect();
            println!("BOARD_CARGO_ARGS=({})", quoted.join(" "));
        }
        Cmd::Strip(c) => build::strip(&c.input, &c.output)?,
        Cmd::Build(c) => {
            let b = one(&boards_dir, &c.board)?;
            let v = Variant::parse(&c.variant)?;
            let built = build::build(&ws, &b, v, &Overrides::default(), args.jobs)?;
            println!("{}", built.stripped.display());
        }
        Cmd::Report(c) => {
            let boards = Board::select(&boards_dir, &c.boards)?;
            let mut sizes = Vec::new();
            for b in &boards {
                let built = if c.no_build {
                    build::existing(&ws, b, Variant::Release)
                } else {
                    build::build(&ws, b, Variant::Release, &Overrides::default(), args.jobs)?
                };
                sizes.push(report::measure(b, Variant::Release.name(), &built)?);
            }
            let r = report::Report {
                rustc: tool_line("rustc", &["-V"]),
                commit: tool_line("git", &["rev-parse", "--short=12", "HEAD"]),
                boards: sizes,
            };
            let out = c.out.unwrap_or_else(|| ws.join("target/size-report"));
            r.write(&out)?;
            print!("{}", r.table());
            for b in &r.boards {
                let top: Vec<String> = b
                    .crates
                    .iter()
                    .take(6)
                    .map(|(k, v)| format!("{k} {}", report::thousands(*v as i64)))
                    .collect();
                println!("{}: largest crates: {}", b.board, top.join(", "));
            }
            println!("wrote {}/report.md and report.json", out.display());
            if !r.ok() {
                eprintln!("size-report: over budget: see the table above");
                return Ok(ExitCode::from(2));
            }
        }
        Cmd::Ladder(c) => {
            let b = one(&boards_dir, &c.board)?;
            let rows: Option<Vec<usize>> = match &c.rows {
                Some(list) => Some(
                    list.split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("--rows {list:?}: {e}"))?,
                ),
                None => None,
            };
            let table = ladder(&ws, &b, args.jobs, rows.as_deref())?;
            let out = ws.join("target/size-report");
            std::fs::create_dir_all(&out)?;
            let path = out.join(format!("ladder-{}.md", b.name));
            std::fs::write(&path, &table)?;
            print!("{table}");
            println!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn one(dir: &std::path::Path, name: &str) -> Result<Board, board::BoardError> {
    let mut v = Board::select(dir, &[name.to_owned()])?;
    Ok(v.remove(0))
}

/// First line of a tool's stdout, or `unknown`.
fn tool_line(tool: &str, args: &[&str]) -> String {
    std::process::Command::new(tool)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// One rung of the ladder: what changes, on top of the rung before.
struct Rung {
    what: &'static str,
    /// `CARGO_PROFILE_RELEASE_{OPT_LEVEL,LTO,CODEGEN_UNITS,PANIC}`; None: the workspace profile.
    profile: Option<[&'static str; 4]>,
    /// How many of the board's release_rustflags ([-Zlocation-detail=none,
    /// -Zfmt-debug=none, -Zunstable-options, -Cpanic=immediate-abort, and on
    /// the router boards -Cforce-unwind-tables=no]) apply.
    release_flags: usize,
    std_features: &'static str,
    features: &'static [&'static str],
    /// PIC code (without -Crelocation-model=static): compared, not cumulative.
    pic: bool,
    /// Further rustflags on top (tricks not in the board profile yet).
    extra: &'static [&'static str],
}

/// The size tricks, in the order STYLE.md's table measures them.
const RUNGS: &[Rung] = &[
    Rung {
        what: "cargo release defaults (opt-level 3, no LTO, 16 CGUs, unwind), build-std",
        profile: Some(["3", "false", "16", "unwind"]),
        release_flags: 0,
        std_features: "",
        features: &[],
        pic: false,
        extra: &[],
    },
    Rung {
        what: "opt-level = \"z\"",
        profile: Some(["z", "false", "16", "unwind"]),
        release_flags: 0,
        std_features: "",
        features: &[],
        pic: false,
        extra: &[],
    },
    Rung {
        what: "lto = true (fat)",
        profile: Some(["z", "true", "16", "unwind"]),
        release_flags: 0,
        std_features: "",
        features: &[],
        pic: false,
        extra: &[],
    },
    Rung {
        what: "codegen-units = 1",
        profile: Some(["z", "true", "1", "unwind"]),
        release_flags: 0,
        std_features: "",
        features: &[],
        pic: false,
        extra: &[],
    },
    Rung {
        what: "panic = \"abort\" (= the workspace release profile)",
        profile: None,
        release_flags: 0,
        std_features: "",
        features: &[],
        pic: false,
        extra: &[],
    },
    Rung {
        what: "-Zbuild-std-features=optimize_for_size (replaces the default std features)",
        profile: None,
        release_flags: 0,
        std_features: "optimize_for_size",
        features: &[],
        pic: false,
        extra: &[],
    },
    Rung {
        what: "-Zlocation-detail=none",
        profile: None,
        release_flags: 1,
        std_features: "optimize_for_size",
        features: &[],
        pic: false,
        extra: &[],
    },
    Rung {
        what: "-Zfmt-debug=none",
        profile: None,
        release_flags: 2,
        std_features: "optimize_for_size",
        features: &[],
        pic: false,
        extra: &[],
    },
    Rung {
        what: "-Zunstable-options -Cpanic=immediate-abort (= shipped `release`)",
        profile: None,
        release_flags: 4,
        std_features: "optimize_for_size",
        features: &[],
        pic: false,
        extra: &[],
    },
    Rung {
        what: "shipped `release` + --features log/release_max_level_warn (info and debug logs compiled out), vs the `release` row",
        profile: None,
        release_flags: 4,
        std_features: "optimize_for_size",
        features: &["log/release_max_level_warn"],
        pic: false,
        extra: &[],
    },
    Rung {
        what:
            "shipped `release` with PIC code (no -Crelocation-model=static), vs the `release` row",
        profile: None,
        release_flags: 4,
        std_features: "optimize_for_size",
        features: &[],
        pic: true,
        extra: &[],
    },
    Rung {
        what: "the first four release flags + -Cforce-unwind-tables=no (nothing unwinds with immediate-abort; shipped on the router boards), vs the `release` row",
        profile: None,
        release_flags: 4,
        std_features: "optimize_for_size",
        features: &[],
        pic: false,
        extra: &["-Cforce-unwind-tables=no"],
    },
];

/// Builds the board once per size trick, each on top of the one before, and
/// returns a markdown table of stripped bytes.
fn ladder(
    ws: &std::path::Path,
    b: &Board,
    jobs: u32,
    rows: Option<&[usize]>,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut out = format!(
        "Size ladder for {} ({}), stripped `flor`; rows 0-8 each on top of the one before, the later rows against row 8.\n\n\
         | step | stripped bytes | change | unstripped |\n|---|---:|---:|---:|\n",
        b.name, b.target
    );
    let mut prev: Option<u64> = None;
    let mut shipped: Option<u64> = None;
    for (i, r) in RUNGS.iter().enumerate() {
        if rows.is_some_and(|rows| !rows.contains(&i)) {
            continue;
        }
        let mut flags = b.rustflags.clone();
        if r.pic {
            flags.retain(|f| f != "-Crelocation-model=static");
        }
        flags.extend(b.release_rustflags.iter().take(r.release_flags).cloned());
        flags.extend(r.extra.iter().map(|f| (*f).to_owned()));
        let keys = ["OPT_LEVEL", "LTO", "CODEGEN_UNITS", "PANIC"];
        let ov = Overrides {
            // Rows 5 and 8 are exactly the `diagnostic` and `release` variants:
            // share their build directories instead of building them again.
            label: Some(match i {
                5 => Variant::Diagnostic.name().to_owned(),
                8 => Variant::Release.name().to_owned(),
                _ => format!("ladder-{i}"),
            }),
            profile: r
                .profile
                .map(|v| keys.into_iter().zip(v.map(str::to_owned)).collect())
                .unwrap_or_default(),
            rustflags: Some(flags),
            build_std_features: Some(r.std_features.to_owned()),
            features: r.features.iter().map(|f| (*f).to_owned()).collect(),
        };
        let built = build::build(ws, b, Variant::Release, &ov, jobs)?;
        let bytes = std::fs::metadata(&built.stripped)?.len();
        let full = std::fs::metadata(&built.symbols)?.len();
        // The last rows are alternatives to the shipped build, not further steps.
        let alternative = r.pic || !r.features.is_empty() || !r.extra.is_empty();
        let base = if alternative { shipped } else { prev };
        let change = base.map_or_else(
            || "—".to_owned(),
            |p| format!("{:+.1}%", (bytes as f64 - p as f64) * 100.0 / p as f64),
        );
        out.push_str(&format!(
            "| {i}. {} | {} | {} | {} |\n",
            r.what,
            report::thousands(bytes as i64),
            change,
            report::thousands(full as i64)
        ));
        eprint!("{out}");
        if !alternative {
            prev = Some(bytes);
        }
        if r.release_flags == b.release_rustflags.len()
            && r.features.is_empty()
            && r.extra.is_empty()
            && !r.pic
        {
            shipped = Some(bytes);
        }
    }
    Ok(out)
}
