//! `retectl`: the Florete operator's offline CLI. Dispatch only; each
//! subcommand lives in its own module of the retectl library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The Florete operator's offline toolchain: declare, validate, compile, sign.
#[derive(Debug, Parser)]
#[command(name = "retectl", version, about)]
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("retectl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
