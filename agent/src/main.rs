//! `flor`: the one binary on every Florete node.
//!
//! The agent pulls its node's signed artifacts from the rete's config-server,
//! verifies them on the device, and supervises one vertex child process
//! (`flor vertex run`), which carries the traffic. One binary for both, so a
//! router's flash holds one copy of quinn, rustls and ring.

mod fsutil;
mod scope;
mod vertex_cmd;

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
enum Cmd {
    Vertex(vertex_cmd::VertexCmd),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let flor: Flor = argh::from_env();
    let result: Result<(), Box<dyn std::error::Error>> = match flor.cmd {
        _ if flor.version => {
            println!("flor {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(Cmd::Vertex(c)) => c.run().map_err(Into::into),
        None => {
            println!("flor {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("flor: {e}");
        std::process::exit(1);
    }
}
