//! `agent-server`: `serve` runs the server, `config` prints the settings it would run with,
//! `chat` talks to one from a terminal (the `agent-chat` crate), `token` mints a token.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use agent_server::{config, mint, server};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// jemalloc rather than glibc's malloc: the server allocates and frees small buffers for every
/// event on every worker thread, often on another thread than the one that allocated them.
/// Measured on the one-node loads (docs/performance.md): about 15% less server CPU per event,
/// at about 0.4 KiB more per idle connection. (mimalloc saved as much CPU but cost 1 to
/// 2.4 KiB more per idle connection and a worse p90.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Print the settings `serve` would run with, as TOML that --config reads back.
    ///
    /// Flags > environment > --config file > defaults; each line says where its value came
    /// from; secrets and URL credentials are masked. Exits non-zero if they are unusable.
    Config(config::ServeArgs),
    /// Talk to an agent: one message and its run as a live timeline, or, without a message, a
    /// conversation in one thread.
    Chat(agent_chat::ChatArgs),
    /// Print a token for a user, signed with the server's secret (for tests and tools).
    Token(mint::TokenArgs),
}

/// The command line with the `--config` file in; clap's own errors and `--help` exit here.
fn parse() -> Result<(Cli, config::Parsed), String> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&argv);
    let parsed = config::with_file(Cli::command(), &argv, matches).map_err(|e| e.to_string())?;
    let cli = Cli::from_arg_matches(&parsed.matches).unwrap_or_else(|e| e.exit());
    Ok((cli, parsed))
}

/// `agent-server config`: the settings, validated, printed with secrets masked.
fn print_config(args: config::ServeArgs, parsed: &config::Parsed) -> Result<(), String> {
    config::ServerConfig::from_args(args).map_err(|e| e.to_string())?;
    let text = parsed.effective_toml().unwrap_or_default();
    // Like the server's banner: a closed stdout (`| head`) must not turn into a panic.
    let mut out = std::io::stdout();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(())
}

fn main() -> ExitCode {
    let outcome = match parse() {
        Err(message) => Err(message),
        Ok((cli, parsed)) => match cli.command {
            Command::Config(args) => print_config(args, &parsed),
            Command::Token(args) => {
                return match mint::mint(&args) {
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
            Command::Serve(args) => server::runtime(args.worker_threads)
                .and_then(|rt| rt.block_on(server::serve_from_args(args))),
            Command::Chat(args) => {
                let chatted = server::runtime(None).map(|rt| rt.block_on(agent_chat::run(args)));
                return match chatted {
                    Ok(Ok(())) => ExitCode::SUCCESS,
                    // A distinct code for a run that waits for approval, so a script can tell.
                    Ok(Err(e)) => {
                        eprintln!("agent-server: {e}");
                        ExitCode::from(e.exit_code())
                    }
                    Err(message) => {
                        eprintln!("agent-server: {message}");
                        ExitCode::FAILURE
                    }
                };
            }
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("agent-server: {message}");
            ExitCode::FAILURE
        }
    }
}
