//! `flor`: the one binary on every Florete node.
//!
//! The agent pulls its node's signed artifacts from the rete's config-server,
//! verifies them on the device, and supervises one vertex child process
//! (`flor vertex run`), which carries the traffic. One binary for both, so a
//! router's flash holds one copy of quinn, rustls and ring.

mod fsutil;
mod scope;

use argh::FromArgs;

/// Florete node: agent and vertex.
#[derive(FromArgs)]
struct Flor {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let flor: Flor = argh::from_env();
    if flor.version || flor.cmd.is_none() {
        println!("flor {}", env!("CARGO_PKG_VERSION"));
    }
}
