//! The mission commands of SPEC §6: `backlog`, `run`, the gates (`approve`, `accept`,
//! `reject`, `rollback`) and control (`resume`, `pause`, `cancel`).
//!
//! Each loads the configuration, builds the role models only when it will drive, and maps the
//! engine's outcome to the exit codes of SPEC §6. A command for a mission that another process
//! is driving is queued in the mission's inbox; the driver applies it within seconds.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use missions_core::config::{LoadedConfig, ProcessEnvironment};
use missions_engine::backlog;
use missions_engine::mission::{Command, Control, EngineError, Mission, Models, Options, Outcome, Progress};
use missions_providers::ProviderRegistry;

use crate::Outcome as Exit;

/// Loads the configuration or says what is wrong with it.
pub fn load_config(workspace: &Path) -> Result<LoadedConfig, Exit> {
    let loaded =
        LoadedConfig::load(workspace, &ProcessEnvironment, Vec::new()).map_err(|e| Exit::Usage(e.to_string()))?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(loaded)
}

/// Builds each role's model from the configuration.
pub fn build_models(loaded: &LoadedConfig, workspace: &Path) -> Result<Models, Exit> {
    ProviderRegistry::from_config(loaded, workspace, &ProcessEnvironment)
        .map(|registry| registry.models())
        .map_err(|e| Exit::Usage(e.to_string()))
}

/// Progress on stderr: a spinner line on a terminal, plain lines otherwise.
pub fn progress_reporter() -> Arc<dyn Fn(&Progress) + Send + Sync> {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        // `wide_msg` cuts the spinner's line to the terminal's width.
        let style = indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        bar.set_style(style);
        Arc::new(move |progress: &Progress| {
            let line = one_line(&progress.to_string());
            // Outcomes stay on screen as lines of their own; the spinner shows the current step.
            if progress.step.is_outcome() {
                let width = usize::from(console::Term::stderr().size().1).max(20);
                bar.println(console::truncate_str(&format!("  {line}"), width, "…"));
            }
            bar.set_message(line);
        })
    } else {
        Arc::new(|progress: &Progress| eprintln!("[{}] {}", progress.mission, one_line(&progress.to_string())))
    }
}

/// A progress message on one line: a multi-line command or note is joined with `⏎`.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" ⏎ ")
}

pub fn options(loaded: &LoadedConfig) -> Options {
    Options::for_config(loaded, progress_reporter(), None)
}

fn engine_error(error: EngineError) -> Exit {
    if error.is_usage() {
        Exit::Usage(error.to_string())
    } else {
        eprintln!("missions: {error}");
        Exit::Failure
    }
}

/// Says where the mission stands and what to do next, and maps the outcome to an exit code.
pub fn report(workspace: &Path, id: &str, outcome: &Outcome) -> Exit {
    match outcome {
        Outcome::Completed => eprintln!("mission {id} is complete; its branch missions/{id} is ready to merge"),
        Outcome::AwaitingApproval => eprintln!(
            "mission {id} waits for approval of its plan: read .missions/{id}/plan.md and contract.md, then `missions approve {id}`"
        ),
        Outcome::AwaitingAcceptance { milestone } => {
            eprintln!(
                "mission {id}: milestone {milestone} is validated and waits for you: `missions accept {id} {milestone}`, \
                 `missions reject {id} {milestone} --feedback …` or `missions rollback {id} {milestone}`"
            );
            // The gate shows what is still open, not only how much.
            let findings = missions_core::status::mission_snapshot(workspace, id)
                .map(|(snapshot, _)| snapshot.findings)
                .unwrap_or_default();
            let open: Vec<_> = findings.iter().filter(|f| &f.milestone == milestone).collect();
            if !open.is_empty() {
                eprintln!("open findings of {milestone} (dismiss or fix them, or accept as they are):");
                for finding in open {
                    eprintln!("  {}", finding.one_line());
                }
            }
        }
        Outcome::Paused { reason, detail } => {
            let reason = reason.as_str().to_owned();
            eprintln!(
                "mission {id} is paused ({reason}): {}. `missions resume {id}` continues it",
                detail.as_deref().unwrap_or("")
            );
        }
        Outcome::Failed { detail } => eprintln!("mission {id} failed: {}", detail.as_deref().unwrap_or("")),
        Outcome::Cancelled => eprintln!("mission {id} is cancelled"),
    }
    // SPEC §6: 0 completed, 3 waiting at a gate, 1 anything else that stopped the mission.
    match outcome {
        Outcome::Completed => Exit::Success,
        Outcome::AwaitingApproval | Outcome::AwaitingAcceptance { .. } => Exit::Gate,
        Outcome::Paused { .. } | Outcome::Failed { .. } | Outcome::Cancelled => Exit::Failure,
    }
}

pub fn backlog(workspace: &Path, json: bool, all: bool) -> Exit {
    let loaded = match load_config(workspace) {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    let items = backlog::with_missions(workspace, backlog::list(workspace, &loaded.config.backlog), all);
    if json {
        match serde_json::to_string_pretty(&items) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("missions: {error}");
                return Exit::Failure;
            }
        }
    } else if items.is_empty() {
        println!("The backlog is empty: add `- [ ] …` items to BACKLOG.md or TODO.md, or TODO comments in the code.");
    } else {
        for item in &items {
            let mission =
                item.mission.as_ref().map(|m| format!("  [mission {} {}]", m.id, m.state)).unwrap_or_default();
            println!("{:<28} {:<8} {}{mission}", item.id, item.source, item.title);
        }
    }
    Exit::Success
}

pub async fn run(workspace: &Path, item: Option<&str>, text: Option<&str>, approve: bool, accept: bool) -> Exit {
    let loaded = match load_config(workspace) {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    let from = match (item, text) {
        (Some(id), None) => backlog::StartFrom::Item(id.to_owned()),
        (None, Some(text)) => backlog::StartFrom::Text(text.to_owned()),
        _ => return Exit::Usage("give exactly one of --item ID or --text TEXT".into()),
    };
    let source = match backlog::source(workspace, &loaded.config.backlog, from) {
        Ok(source) => source,
        Err(error) => return Exit::Usage(error.to_string()),
    };
    let models = match build_models(&loaded, workspace) {
        Ok(models) => models,
        Err(exit) => return exit,
    };
    let options = options(&loaded);
    let mut mission = match Mission::start(workspace, loaded, models, source, accept, options) {
        Ok(mission) => mission,
        Err(error) => return engine_error(error),
    };
    let id = mission.id().to_owned();
    eprintln!("mission {id} started on branch missions/{id}");
    let mut outcome = match mission.drive().await {
        Ok(outcome) => outcome,
        Err(error) => return engine_error(error),
    };
    if approve && outcome == Outcome::AwaitingApproval {
        if let Err(error) = mission.apply(Command::Approve) {
            return engine_error(error);
        }
        outcome = match mission.drive().await {
            Ok(outcome) => outcome,
            Err(error) => return engine_error(error),
        };
    }
    report(workspace, &id, &outcome)
}

/// Applies `command` to mission `id` and, when it drives on, drives it on. With `accept`,
/// auto-accept is switched on first (recorded, so it survives a crash).
/// `command`, preceded by turning auto-accept on when the user asked for it (`--accept`).
pub fn with_auto_accept(accept: bool, command: Command) -> Vec<Command> {
    let mut commands = Vec::new();
    if accept {
        commands.push(Command::SetAutoAccept { auto_accept: true });
    }
    commands.push(command);
    commands
}

/// Applies `commands` to mission `id` (through its inbox when another process drives it) and
/// drives it on when one of them moves it on.
pub async fn control(workspace: &Path, id: &str, commands: Vec<Command>) -> Exit {
    let drive = commands.iter().any(Command::drives_on);
    let loaded = match load_config(workspace) {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    let models = if drive {
        match build_models(&loaded, workspace) {
            Ok(models) => models,
            Err(exit) => return exit,
        }
    } else {
        Models::default()
    };
    let options = options(&loaded);
    // SPEC §6: `dismiss` exits 0 once recorded, wherever the mission stands.
    let settles_at_once = commands.iter().any(|c| matches!(c, Command::DismissFinding { .. }));
    let controlled = tokio::task::spawn_blocking({
        let (workspace, id) = (workspace.to_owned(), id.to_owned());
        move || Mission::control(&workspace, &id, loaded, models, options, commands)
    })
    .await;
    let mut mission = match controlled {
        Ok(Ok(Control::Opened { mission, warnings, applied })) => {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            if let Err(error) = applied {
                return engine_error(error);
            }
            mission
        }
        Ok(Ok(Control::Queued { holder, verdicts })) => {
            // A live driver got the commands through the inbox (SPEC §2 rule 8); its verdict
            // decides the exit, so a refused command still exits 2.
            for verdict in verdicts {
                match verdict {
                    Some(Ok(())) => eprintln!("mission {id} is being driven by {holder}; it applied the command"),
                    Some(Err(reason)) => return Exit::Usage(reason),
                    None => eprintln!(
                        "mission {id} is being driven by {holder}; the command is queued and applies when the driver next looks"
                    ),
                }
            }
            return Exit::Success;
        }
        Ok(Err(error)) => return engine_error(error),
        Err(join) => return engine_error(EngineError::Io(join.to_string())),
    };
    if settles_at_once {
        eprintln!("mission {id}: the finding is dismissed");
        return Exit::Success;
    }
    // A fix for a paused mission waits for its resume; nothing drives it now.
    let paused =
        mission.projection().mission.as_ref().is_some_and(|m| m.state == missions_core::mission::MissionState::Paused);
    if drive && paused {
        eprintln!("mission {id} is paused; the work is queued and starts when you `missions resume {id}`");
        return Exit::Success;
    }
    let outcome = if drive {
        match mission.drive().await {
            Ok(outcome) => outcome,
            Err(error) => return engine_error(error),
        }
    } else {
        match mission.outcome() {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                eprintln!(
                    "mission {id} is {}",
                    mission.projection().mission.as_ref().map(|m| m.state.to_string()).unwrap_or_default()
                );
                return Exit::Success;
            }
            Err(error) => return engine_error(error),
        }
    };
    report(workspace, id, &outcome)
}

pub fn map(workspace: &Path, path: Option<&str>, tokens: usize, focus: &str) -> Exit {
    let confinement = match missions_tools::Confinement::new(workspace) {
        Ok(c) => c,
        Err(error) => return Exit::Usage(format!("{}: {error}", workspace.display())),
    };
    match missions_tools::repo_map::repo_map(&confinement, path, focus, tokens) {
        Ok(map) => {
            print!("{map}");
            Exit::Success
        }
        Err(message) => Exit::Usage(message),
    }
}
