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
