//! `missions`: the command line (SPEC §6) and the language server's entry point.
//!
//! A thin shell: it parses arguments, calls the core and the providers, prints, and maps
//! outcomes to exit codes (0 success, 1 failure or something to fix, 2 usage or config error,
//! 3 waiting at a gate). Progress and logs go to stderr; results and `--json` go to stdout.

mod demo;
mod doctor;
mod missions;
mod sandbox;
mod status;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use missions_core::mission::Check;
use missions_core::store::AssertionDraft;
use missions_engine::mission::Command as EngineCommand;

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
    /// List backlog items: id, source, title, and the mission of an item that has one.
    Backlog {
        #[arg(long)]
        json: bool,
        /// Also list items whose mission completed.
        #[arg(long)]
        all: bool,
    },
    /// Start a mission and drive it: stops at the plan gate unless --approve, at each
    /// milestone gate unless --accept.
    Run {
        /// A backlog item's id (see `missions backlog`).
        #[arg(long, conflicts_with = "text")]
        item: Option<String>,
        /// The work to do, in words.
        #[arg(long)]
        text: Option<String>,
        /// Approve the plan without stopping.
        #[arg(long)]
        approve: bool,
        /// Accept every validated milestone without stopping (recorded: auto-accept).
        #[arg(long)]
        accept: bool,
    },
    /// Show missions with their state, budget and open findings.
    Status {
        /// One mission; all of them when omitted.
        id: Option<String>,
        /// Print the status snapshot as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Approve a mission's plan (locking its contract) and drive on.
    Approve {
        id: String,
        #[arg(long)]
        accept: bool,
    },
    /// Accept the milestone waiting for acceptance and drive on.
    Accept {
        id: String,
        milestone: Option<String>,
        #[arg(long)]
        accept: bool,
    },
    /// Reject a waiting milestone; the feedback becomes a corrective feature.
    Reject {
        id: String,
        milestone: String,
        #[arg(long)]
        feedback: String,
    },
    /// Move the mission branch back to a milestone's base commit (the dropped commits are
    /// kept under refs/missions/ID/rolled-back/N) and pause.
    Rollback { id: String, milestone: String },
    /// Continue a paused or interrupted mission.
    Resume {
        id: String,
        #[arg(long)]
        accept: bool,
    },
    /// Pause a mission (also one another process is driving).
    Pause { id: String },
    /// Cancel a mission.
    Cancel { id: String },
    /// Dismiss an open finding (recorded, with the reason).
    Dismiss {
        id: String,
        finding: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Turn an open finding into a corrective feature of its milestone, and drive on.
    Fix { id: String, finding: String },
    /// Waive an assertion you judge wrong (an acceptance test that tests the wrong thing):
    /// recorded with the reason; it no longer counts for its milestone.
    Waive {
        id: String,
        assertion: String,
        #[arg(long)]
        reason: String,
    },
    /// Add an assertion of your own to a milestone not yet accepted (checked by a command, a
    /// review rubric or user-test steps); a milestone waiting for you is validated again.
    #[command(group(clap::ArgGroup::new("check").required(true).args(["command", "rubric", "steps"])))]
    AddAssertion {
        id: String,
        assertion: String,
        #[arg(long)]
        milestone: String,
        #[arg(long)]
        description: String,
        /// A command the engine runs; it passes when it exits with `--expect-exit`.
        #[arg(long)]
        command: Option<String>,
        #[arg(long, default_value_t = 0)]
        expect_exit: i32,
        /// What a review agent judges.
        #[arg(long)]
        rubric: Option<String>,
        /// What the user-testing agent does and expects.
        #[arg(long)]
        steps: Option<String>,
    },
    /// Print the repository map that models are given.
    Map {
        path: Option<String>,
        /// Token budget of the map.
        #[arg(long, default_value_t = 2048)]
        tokens: usize,
        /// Rank the map toward this text.
        #[arg(long, default_value = "")]
        focus: String,
    },
    /// Run a whole mission offline on a bundled example project, and show the result.
    Demo {
        /// Only lay out the example project in DIR, configured with the recorded model.
        #[arg(long, value_name = "DIR")]
        prepare: Option<PathBuf>,
    },
    /// Show the effective configuration and check providers, git and the workspace.
    Doctor,
    /// Internal: confine this process (namespaces, read-only .git, Landlock) and exec the
    /// command. The engine runs every agent command through it.
    #[command(name = "__sandbox", hide = true)]
    Sandbox {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        allow_network: bool,
        #[arg(long)]
        writable: Vec<PathBuf>,
        #[arg(long)]
        hide: Vec<PathBuf>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// How a command ended, mapped to the exit codes of SPEC §6.
pub enum Outcome {
    Success,
    /// Something failed or needs fixing (exit 1).
    Failure,
    /// Waiting at a gate (exit 3).
    Gate,
    /// A usage or configuration error (exit 2), with the message to print.
    Usage(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sandbox { root, allow_network, writable, hide, command } = &cli.command {
        return sandbox::exec(root, *allow_network, writable, hide, command);
    }
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
    // Paths in messages, files and git are clearer and stabler when absolute.
    let workspace = match workspace.canonicalize() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("missions: the workspace {} cannot be used: {error}", workspace.display());
            return ExitCode::from(2);
        }
    };
    if !workspace.is_dir() {
        eprintln!("missions: the workspace {} is not a directory; pass --workspace DIR", workspace.display());
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("missions: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let outcome = match cli.command {
        Command::Lsp { stdio: _ } => match runtime.block_on(missions_lsp::run_stdio()) {
            0 => Outcome::Success,
            _ => Outcome::Failure,
        },
        Command::Backlog { json, all } => missions::backlog(&workspace, json, all),
        Command::Run { item, text, approve, accept } => {
            runtime.block_on(missions::run(&workspace, item.as_deref(), text.as_deref(), approve, accept))
        }
        Command::Status { id, json } => status::run(&workspace, id.as_deref(), json),
        Command::Approve { id, accept } => runtime.block_on(missions::control(
            &workspace,
            &id,
            missions::with_auto_accept(accept, EngineCommand::Approve),
        )),
        Command::Accept { id, milestone, accept } => runtime.block_on(missions::control(
            &workspace,
            &id,
            missions::with_auto_accept(accept, EngineCommand::Accept { milestone }),
        )),
        Command::Reject { id, milestone, feedback } => {
            runtime.block_on(missions::control(&workspace, &id, vec![EngineCommand::Reject { milestone, feedback }]))
        }
        Command::Rollback { id, milestone } => {
            runtime.block_on(missions::control(&workspace, &id, vec![EngineCommand::Rollback { milestone }]))
        }
        Command::Resume { id, accept } => runtime.block_on(missions::control(
            &workspace,
            &id,
            missions::with_auto_accept(accept, EngineCommand::Resume),
        )),
        Command::Pause { id } => {
            runtime.block_on(missions::control(&workspace, &id, vec![EngineCommand::Pause { note: None }]))
        }
        Command::Cancel { id } => runtime.block_on(missions::control(&workspace, &id, vec![EngineCommand::Cancel])),
        Command::Dismiss { id, finding, reason } => runtime.block_on(missions::control(
            &workspace,
            &id,
            vec![EngineCommand::DismissFinding { finding, reason }],
        )),
        Command::Fix { id, finding } => {
            runtime.block_on(missions::control(&workspace, &id, vec![EngineCommand::FixFinding { finding }]))
        }
        Command::AddAssertion { id, assertion, milestone, description, command, expect_exit, rubric, steps } => {
            let check = match (command, rubric, steps) {
                (Some(command), _, _) => Check::Command { command, expect_exit },
                (None, Some(rubric), _) => Check::Review { rubric },
                (None, None, steps) => Check::UserTest { steps: steps.unwrap_or_default() },
            };
            let draft = AssertionDraft { id: assertion, milestone, description, check };
            runtime.block_on(missions::control(&workspace, &id, vec![EngineCommand::AddAssertion { assertion: draft }]))
        }
        Command::Waive { id, assertion, reason } => {
            runtime.block_on(missions::control(&workspace, &id, vec![EngineCommand::Waive { assertion, reason }]))
        }
        Command::Map { path, tokens, focus } => missions::map(&workspace, path.as_deref(), tokens, &focus),
        Command::Demo { prepare: Some(dir) } => demo::run_prepare(&dir),
        Command::Demo { prepare: None } => runtime.block_on(demo::run()),
        Command::Doctor => runtime.block_on(doctor::run(&workspace)),
        // Handled before anything else starts.
        Command::Sandbox { .. } => Outcome::Failure,
    };
    match outcome {
        Outcome::Success => ExitCode::SUCCESS,
        Outcome::Failure => ExitCode::from(1),
        Outcome::Gate => ExitCode::from(3),
        Outcome::Usage(message) => {
            eprintln!("missions: {message}");
            ExitCode::from(2)
        }
    }
}
