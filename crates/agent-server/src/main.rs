//! `agent-server`: `serve` runs the server, `chat` talks to one from a terminal.

use std::process::ExitCode;

use agent_server::{chat, config, mint, server};
use clap::{Parser, Subcommand};

/// Runs AI agents per user and streams what they do, live, to exactly that user.
#[derive(Debug, Parser)]
#[command(name = "agent-server", version, long_version = env!("AGENT_SERVER_LONG_VERSION"))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the WebSocket endpoint (and the dev token endpoint when no secret is configured).
    Serve(config::ServeArgs),
    /// Connect to a server, start a run, and print its events as a readable timeline.
    Chat(chat::ChatArgs),
    /// Print a token for a user, signed with the server's secret (for tests and tools).
    Token(mint::TokenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Token(args) = &cli.command {
        return match mint::mint(args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("agent-server token: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let outcome = match cli.command {
        Command::Serve(args) => runtime.block_on(server::serve_from_args(args)),
        Command::Chat(args) => runtime.block_on(chat::run(args)).map_err(|e| e.to_string()),
        Command::Token(_) => Ok(()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("agent-server: {message}");
            ExitCode::FAILURE
        }
    }
}
