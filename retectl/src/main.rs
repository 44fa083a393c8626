//! `retectl`: the Florete operator's offline CLI. Dispatch only; each
//! subcommand lives in its own module of the retectl library.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// The Florete operator's offline toolchain: declare, validate, compile, sign.
#[derive(Debug, Parser)]
// Bare `retectl`: the help on standard error, exit status 2 (flor does the same).
#[command(name = "retectl", version, about, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a fresh rete repo from the template (refuses to overwrite).
    New(retectl::new::Args),
    /// Check every rule of a rete repo; report all problems as file:line: message.
    Validate(retectl::validate::Args),
    /// Compile and sign per-node artifacts: <out>/<node>/mgmt/{agent.json,vertices/flor.json}.
    Compile(retectl::compile::Args),
    /// The rete CA: init, and sign management-plane signers.
    #[command(subcommand)]
    Ca(retectl::ca::Command),
    /// Issue a node's enrollment bundle (Flow A: new keys; Flow B: --csr from `flor id create`).
    IssueBundle(retectl::bundle::Args),
    /// List the certificates enrollment.log records with their expiry; --expiring 30d fails when one is inside.
    Certs(retectl::certs::Args),
    /// Push a compiled tree to the config-server over Florete, as the operator's user identity.
    Publish(retectl::publish::Args),
    /// Write the rete's static landing page (index.html + landing.css) into --out.
    Landing(retectl::landing::Args),
    /// Print the shell completion script for bash, zsh or fish (e.g. retectl completions bash > /usr/share/bash-completion/completions/retectl).
    Completions {
        /// the shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (retectl.1 and retectl-<command>.1 for every command) into --out.
    Man {
        /// the directory to write them into (created if missing)
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// Completions and man pages come from the parser itself, so they list
/// exactly the commands and flags this build takes.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "retectl",
        &mut std::io::stdout(),
    );
    Ok(())
}

fn man(out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    clap_mangen::generate_to(Cli::command(), out)?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::New(a) => retectl::new::run(a).map_err(Into::into),
        Command::Validate(a) => retectl::validate::run(a).map_err(Into::into),
        Command::Compile(a) => retectl::compile::run(a).map_err(Into::into),
        Command::Ca(c) => retectl::ca::run(c).map_err(Into::into),
        Command::IssueBundle(a) => retectl::bundle::run(a).map_err(Into::into),
        Command::Certs(a) => retectl::certs::run(a).map_err(Into::into),
        Command::Publish(a) => retectl::publish::run(a).map_err(Into::into),
        Command::Landing(a) => retectl::landing::run(a).map_err(Into::into),
        Command::Completions { shell } => completions(shell),
        Command::Man { out } => man(&out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("retectl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
