//! What a person typing `flor --help` on a router sees.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn help_lists_every_command_and_bad_flags_fail_cleanly() {
    let exe = env!("CARGO_BIN_EXE_flor");
    let out = Command::new(exe).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "id",
        "enroll",
        "agent",
        "config-server",
        "vertex",
        "doctor",
        "ping",
    ] {
        assert!(
            text.contains(cmd),
            "`flor --help` does not mention {cmd}: {text}"
        );
    }
    let out = Command::new(exe)
        .args(["agent", "sync", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--commit-timeout", "--confirm", "--dry-run", "--rete"] {
        assert!(
            text.contains(flag),
            "`flor agent sync --help` does not mention {flag}: {text}"
        );
    }
    let out = Command::new(exe).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// `flor` with no arguments: its help on standard error, exit status 2 (as retectl).
#[test]
fn bare_flor_prints_its_help_and_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_flor")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("Usage: flor"), "{err}");
    assert!(err.contains("Commands:") && err.contains("enroll"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_flor"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("flor "));
}

/// The table's root, packaging/cli/.
fn cli_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/cli")
}

/// `flor <path> --help`, read back: its description, and (name, description)
/// per positional argument, option (without --help) and subcommand, as argh
/// prints them (entries indented by two spaces, descriptions wrapped under a
/// deeper indent).
#[derive(Debug, Default, PartialEq)]
struct Help {
    description: String,
    args: Vec<(String, String)>,
    flags: Vec<(String, String)>,
    commands: Vec<(String, String)>,
}

fn parse_help(text: &str) -> Help {
    let mut h = Help::default();
    let mut section = "";
    let mut entry: Option<(String, String)> = None;
    let flush = |h: &mut Help, section: &str, entry: &mut Option<(String, String)>| {
        if let Some(e) = entry.take() {
            match section {
                "Positional Arguments:" => h.args.push(e),
                "Options:" if !e.0.starts_with("--help") => h.flags.push(e),
                "Commands:" => h.commands.push(e),
                _ => {}
            }
        }
    };
    for (i, line) in text.lines().enumerate() {
        if i == 0 || line.is_empty() {
            continue; // "Usage: ..." and blank lines
        }
        if !line.starts_with(' ') {
            if line.ends_with(':') {
                flush(&mut h, section, &mut entry);
                section = if line == "Options:" || line == "Commands:" {
                    line
                } else if line == "Positional Arguments:" {
                    "Positional Arguments:"
                } else {
                    ""
                };
            } else if section.is_empty() {
                h.description = line.to_string();
            }
            continue;
        }
        let body = &line[2..];
        if !body.starts_with(' ') {
            flush(&mut h, section, &mut entry);
            let (name, desc) = body.split_once("  ").unwrap_or((body, ""));
            entry = Some((name.to_string(), desc.trim().to_string()));
        } else if let Some((_, desc)) = &mut entry {
            if !desc.is_empty() {
                desc.push(' ');
            }
            desc.push_str(body.trim());
        }
    }
    flush(&mut h, section, &mut entry);
    h
}

/// packaging/cli/flor.commands, per command path, in the same shape.
fn table() -> Vec<(String, Help)> {
    let text = std::fs::read_to_string(cli_dir().join("flor.commands")).unwrap();
    let mut out: Vec<(String, Help)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split('|').collect();
        let (kind, path) = fields[0].split_once(' ').unwrap();
        if kind == "cmd" {
            assert_eq!(fields.len(), 2, "{line}");
            out.push((
                path.to_string(),
                Help {
                    description: fields[1].to_string(),
                    ..Help::default()
                },
            ));
            if let Some((parent, name)) = path.rsplit_once(' ') {
                let p = out.iter_mut().find(|(p, _)| p == parent);
                let p = p.unwrap_or_else(|| panic!("{line}: parent {parent} comes later"));
                p.1.commands.push((name.to_string(), fields[1].to_string()));
            }
            continue;
        }
        assert_eq!(fields.len(), 4, "{line}");
        assert!(
            ["-", "file", "dir", "scope", "text"].contains(&fields[2]),
            "{line}: value kind"
        );
        let h = &mut out
            .iter_mut()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{line}: no cmd line for {path} before it"))
            .1;
        let e = (fields[1].to_string(), fields[3].to_string());
        match kind {
            "flag" => h.flags.push(e),
            "arg" => h.args.push(e),
            _ => panic!("{line}: unknown kind {kind}"),
        }
    }
    out
}

/// Every command, flag, argument and description in packaging/cli/flor.commands
/// is what the real binary's --help says, and nothing --help lists is missing.
#[test]
fn the_completion_table_is_what_flor_help_says() {
    let exe = env!("CARGO_BIN_EXE_flor");
    let table = table();
    assert!(table.len() > 10, "{table:?}");
    for (path, want) in &table {
        let mut args: Vec<&str> = path.split(' ').skip(1).collect();
        args.push("--help");
        let out = Command::new(exe).args(&args).output().unwrap();
        assert!(out.status.success(), "flor {args:?}");
        let got = parse_help(&String::from_utf8_lossy(&out.stdout));
        let sorted = |v: &[(String, String)]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        assert_eq!(got.description, want.description, "{path}: description");
        assert_eq!(sorted(&got.flags), sorted(&want.flags), "{path}: flags");
        assert_eq!(got.args, want.args, "{path}: positional arguments");
        // argh lists a subcommand by its one-line description, as the table does.
        assert_eq!(
            sorted(&got.commands),
            sorted(&want.commands),
            "{path}: commands"
        );
    }
}

/// The generated completions work in the three shells and the man page
/// renders without warnings: scope names for `--rete`, flags for `-`, files
/// for `flor enroll`.
#[test]
fn generated_completions_complete_in_bash_zsh_and_fish() {
    let tmp = std::env::temp_dir().join(format!("flor-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let gen = tmp.join("gen");
    let home = tmp.join("home");
    std::fs::create_dir_all(home.join("retes/demo.flor")).unwrap();
    let st = Command::new("sh")
        .arg(cli_dir().join("generate.sh"))
        .arg(&gen)
        .status()
        .unwrap();
    assert!(st.success());
    let run = |prog: &str, script: &str| -> String {
        let out = Command::new(prog)
            .args([if prog == "zsh" { "-fc" } else { "-c" }, script])
            .current_dir(&gen)
            .env("FLOR_HOME", &home)
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e} (ci/setup.sh installs bash, zsh and fish)"));
        assert!(
            out.status.success(),
            "{prog}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let bash = run(
        "bash",
        r#"source ./flor.bash
c() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _flor; echo "${COMPREPLY[*]}"; }
c flor agent sync --rete ""; c flor agent sync --r; c flor ag; c flor agent ""; c flor enroll --f"#,
    );
    assert_eq!(
        bash.lines().collect::<Vec<_>>(),
        [
            "demo.flor",
            "--rete",
            "agent",
            "run sync status --help",
            "--from"
        ]
    );
    // zsh's completion system, stubbed to print what it is handed.
    let zsh = run(
        "zsh",
        r#"_describe() { local -a a; a=("${(@P)${@[-1]}}"); print -l -- "${a[@]%%:*}"; }
compadd() { [[ $1 == -a ]] && print -l -- "${(@P)2}"; }
_files() { print "<files>"; }
_message() { print "<message>"; }
words=(flor agent status --); CURRENT=4; source ./_flor; print -- ---
words=(flor doctor --rete ""); CURRENT=4; _flor; print -- ---
words=(flor enroll ""); CURRENT=3; _flor"#,
    );
    assert_eq!(
        zsh.lines().collect::<Vec<_>>(),
        [
            "--rete",
            "--json",
            "--help",
            "---",
            "demo.flor",
            "---",
            "<files>"
        ]
    );
    let fish = run(
        "fish",
        r#"source ./flor.fish; complete -C "flor agent sync --"; echo ---; complete -C "flor ping --rete "; echo ---; complete -C "flor serv""#,
    );
    let firsts: Vec<&str> = fish
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        firsts,
        [
            "--commit-timeout",
            "--confirm",
            "--dry-run",
            "--rete",
            "---",
            "demo.flor",
            "---",
            "service"
        ]
    );
    let man = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .arg(gen.join("flor.1"))
        .output()
        .unwrap();
    assert!(man.status.success() && man.stderr.is_empty(), "{man:?}");
    // grotty's bold and underline are overstrikes ("X\bX"): keep the last of each.
    let mut page = String::new();
    for c in String::from_utf8_lossy(&man.stdout).chars() {
        if c == '\u{8}' {
            page.pop();
        } else {
            page.push(c);
        }
    }
    assert!(page.contains("flor agent sync"), "{page}");
    let _ = std::fs::remove_dir_all(&tmp);
}
