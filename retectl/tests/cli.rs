#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! `retectl completions <shell>` and `retectl man`, generated from retectl's
//! own clap parser: they load in bash, zsh and fish and complete commands,
//! the man pages render without warnings; bare `retectl` prints its help and
//! exits 2, as bare `flor` does.

mod common;

use std::process::Command;

use common::*;

#[test]
fn completions_man_pages_and_bare_help() {
    let tmp = tempfile::tempdir().unwrap();
    for (shell, file, check) in [
        ("bash", "retectl.bash", ["bash", "-n"]),
        ("zsh", "_retectl", ["zsh", "-n"]),
        ("fish", "retectl.fish", ["fish", "-n"]),
    ] {
        let o = retectl(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {:?}", text(&o));
        let script = String::from_utf8(o.stdout).unwrap();
        for cmd in ["publish", "issue-bundle", "validate", "completions"] {
            assert!(script.contains(cmd), "{shell} completion lacks {cmd}");
        }
        let path = tmp.path().join(file);
        std::fs::write(&path, &script).unwrap();
        let st = Command::new(check[0])
            .arg(check[1])
            .arg(&path)
            .status()
            .unwrap_or_else(|e| panic!("{}: {e} (ci/setup.sh installs it)", check[0]));
        assert!(st.success(), "{shell} rejects its completion script");
    }
    // bash, for real: `retectl pu<TAB>` and `retectl publish --a<TAB>`.
    let o = Command::new("bash")
        .arg("-c")
        .arg(
            r#"source "$1"
c() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; _retectl retectl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; echo "${COMPREPLY[*]}"; }
c retectl pu; c retectl publish --a"#,
        )
        .arg("bash")
        .arg(tmp.path().join("retectl.bash"))
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines, ["publish", "--as"], "{got}");

    let man = tmp.path().join("man");
    let o = retectl(&["man", "--out", man.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    for page in ["retectl.1", "retectl-publish.1", "retectl-ca-init.1"] {
        let p = man.join(page);
        let r = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            r.status.success() && r.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }

    let o = retectl(&[]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains("Usage: retectl"), "{err}");
    assert!(err.contains("publish"), "{err}");
}
