//! `missions`: the command line (SPEC §6) and the language server's entry point.
//!
//! A thin shell: it parses arguments, calls the core and the providers, prints, and maps
//! outcomes to exit codes (0 success, 1 failure or something to fix, 2 usage or config error,
//! 3 waiting at a gate). Progress and logs go to stderr; results and `--json` go to stdout.

mod doctor;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "missions", version, about = "Long-running, self-checking coding missions run by LLM agents.")]
struct Cli {
    /// The workspace (a git repository) to work in.
    #[arg(long, global = true, value_name = "DIR")]
    workspace: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the language server on stdio.
    Lsp {
        /// Accepted for editors that pass it; stdio is the only transport.
        #[arg(long)]
        stdio: bool,
    },
    /// Show the effective configuration and check providers, git and the workspace.
    Doctor,
    /// Show missions with their state, budget and open findings.
    Status {
        /// One mission; all of them when omitted.
        id: Option<String>,
        /// Print the status snapshot as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// How a command ended, mapped to the exit codes of SPEC §6.
pub enum Outcome {
    Success,
    /// Something failed or needs fixing (exit 1).
    Failure,
    /// A usage or configuration error (exit 2), with the message to print.
    Usage(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_filter = tracing_subscriber::EnvFilter::try_from_env("MISSIONS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(log_filter).init();

    let workspace = match &cli.workspace {
        Some(dir) => dir.clone(),
        None => match std::env::current_dir() {
            Ok(dir) => dir,
            Err(error) => {
                eprintln!("missions: cannot read the current directory: {error}");
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("missions: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let outcome = match cli.command {
        Command::Lsp { stdio: _ } => {
            runtime.block_on(missions_lsp::run_stdio());
            Outcome::Success
        }
        Command::Doctor => runtime.block_on(doctor::run(&workspace)),
        Command::Status { id, json } => status::run(&workspace, id.as_deref(), json),
    };
    match outcome {
        Outcome::Success => ExitCode::SUCCESS,
        Outcome::Failure => ExitCode::from(1),
        Outcome::Usage(message) => {
            eprintln!("missions: {message}");
            ExitCode::from(2)
        }
    }
}
