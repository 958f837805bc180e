//! What the user sees of the missions this server drives: their reports (from
//! [`crate::session`]'s channel) become `$/progress`, refreshed diagnostics and
//! `missions/didChange`, and at a gate the user is asked with `window/showMessageRequest`; an
//! answer goes back through [`crate::session::control`]. At start, missions waiting at a gate
//! or left with nothing driving them are announced.

use std::collections::HashMap;
use std::sync::Arc;

use missions_engine::mission::{Command, Outcome, Step};
use tokio::sync::mpsc::UnboundedReceiver;
use tower_lsp_server::ls_types::{MessageActionItem, MessageType, NumberOrString, ShowDocumentParams};
use tower_lsp_server::{NotCancellable, OngoingProgress, Unbounded};

use crate::session::{self, DriverEvent};
use crate::{State, current};

/// Numbers the progress tokens of this server's drives.
static DRIVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// At start: every mission waiting at a gate is asked about again, and every mission left
/// mid-way with nothing driving it (or paused when its editor closed) is announced with an offer
/// to resume. Nothing is resumed silently (SPEC §8).
pub(crate) async fn announce(state: Arc<State>) {
    for view in state.views() {
        let snapshot = &view.snapshot;
        let mission = snapshot.mission.id.clone();
        let current = snapshot
            .plan
            .as_ref()
            .and_then(|p| p.milestones.iter().find(|m| m.status != missions_core::mission::WorkStatus::Accepted))
            .map(|m| m.id.clone());
        let state = state.clone();
        if snapshot.interrupted {
            let message = format!(
                "Mission {mission} was left {} with nothing driving it (its driver stopped). Resume it?",
                snapshot.mission.state
            );
            tokio::spawn(async move {
                if ask(&state, message, &["Resume"]).await.as_deref() == Some("Resume") {
                    report(&state, session::control(&state, mission, Command::Resume).await).await;
                }
            });
            continue;
        }
        if let Some(
            outcome @ (Outcome::AwaitingApproval | Outcome::AwaitingAcceptance { .. } | Outcome::Paused { .. }),
        ) = Outcome::from_mission(&snapshot.mission, current)
        {
            tokio::spawn(gate(state, mission, Ok(outcome)));
        }
    }
}

/// Forwards driver events to the client until the server stops.
pub(crate) async fn forward(state: Arc<State>, mut events: UnboundedReceiver<DriverEvent>) {
    let mut ongoing: HashMap<String, OngoingProgress<Unbounded, NotCancellable>> = HashMap::new();
    while let Some(event) = events.recv().await {
        match event {
            DriverEvent::Progress(progress) => {
                if let (Step::ToolCalled { .. }, Some(run)) = (&progress.step, &progress.run) {
                    // One line, short enough for a status view.
                    let step = progress.step.to_string();
                    let tool: String = step.lines().next().unwrap_or_default().chars().take(160).collect();
                    state.note_activity(&progress.mission, Some((run.clone(), tool)));
                }
                if current(&state.flags).work_done_progress {
                    match ongoing.get(&progress.mission) {
                        Some(running) => running.report(progress.to_string()).await,
                        None => {
                            // Each drive gets a token of its own: a client may still hold the
                            // last one's (LSP forbids reusing a token while it is known).
                            let drive = DRIVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let token = NumberOrString::String(format!(
                                "missions/{}/{}-{drive}",
                                progress.mission,
                                std::process::id()
                            ));
                            if state.client.create_work_done_progress(token.clone()).await.is_ok() {
                                let running = state
                                    .client
                                    .progress(token, "Missions")
                                    .with_message(progress.to_string())
                                    .begin()
                                    .await;
                                ongoing.insert(progress.mission.clone(), running);
                            }
                        }
                    }
                }
                // Diagnostics and status follow the mission, a few times a second at most.
                tokio::spawn(state.clone().refresh_soon());
            }
            // A recorded event (a finding, a verdict) reaches the editor within a refresh
            // interval, however fast events come.
            DriverEvent::Appended => {
                tokio::spawn(state.clone().refresh_soon());
            }
            DriverEvent::Finished { mission, outcome } => {
                missions_core::sync::lock(&state.driving).remove(&mission);
                state.note_activity(&mission, None);
                if let Some(running) = ongoing.remove(&mission) {
                    running.finish().await;
                }
                state.refresh(Some(&mission)).await;
                tokio::spawn(gate(state.clone(), mission, outcome));
            }
        }
    }
}

async fn ask(state: &State, message: String, choices: &[&str]) -> Option<String> {
    ask_as(state, MessageType::INFO, message, choices).await
}

async fn ask_as(state: &State, kind: MessageType, message: String, choices: &[&str]) -> Option<String> {
    let actions = choices
        .iter()
        .map(|title| MessageActionItem { title: (*title).to_owned(), properties: Default::default() })
        .collect();
    match state.client.show_message_request(kind, message, Some(actions)).await {
        Ok(Some(choice)) => Some(choice.title),
        _ => None,
    }
}

/// Opens a mission's `plan.md` (and its contract beside it) in the editor.
pub(crate) async fn open_plan(state: &State, mission: &str) {
    open(state, mission, "contract.md").await;
    open(state, mission, "plan.md").await;
}

async fn open(state: &State, mission: &str, name: &str) {
    let Ok(workspace) = state.workspace() else { return };
    let path = missions_core::layout::mission_file(&workspace, mission, name);
    show_file(state, &path, format!("Mission {mission}: see {}", path.display())).await;
}

/// Shows `path` with `window/showDocument` where the client supports it, else tells the user
/// `instead`.
pub(crate) async fn show_file(state: &State, path: &std::path::Path, instead: String) {
    let shown = match crate::to_proto::uri(path) {
        Some(uri) if current(&state.flags).show_document => state
            .client
            .show_document(ShowDocumentParams { uri, external: Some(false), take_focus: Some(true), selection: None })
            .await
            .unwrap_or(false),
        _ => false,
    };
    if !shown {
        state.client.show_message(MessageType::INFO, instead).await;
    }
}

async fn report(state: &State, result: tower_lsp_server::jsonrpc::Result<serde_json::Value>) {
    if let Err(error) = result {
        state.client.show_message(MessageType::ERROR, error.message.to_string()).await;
    }
}

/// Tells the user where a mission stopped and, at a gate, asks what to do.
async fn gate(state: Arc<State>, mission: String, outcome: Result<Outcome, String>) {
    match outcome {
        Err(error) => state.client.show_message(MessageType::ERROR, format!("Mission {mission}: {error}")).await,
        Ok(Outcome::AwaitingApproval) => {
            let message =
                format!("Mission {mission}: the plan and its validation contract are ready for your approval.");
            match ask(&state, message, &["Approve", "Open plan"]).await.as_deref() {
                Some("Approve") => report(&state, session::control(&state, mission, Command::Approve).await).await,
                Some("Open plan") => open_plan(&state, &mission).await,
                _ => {}
            }
        }
        Ok(Outcome::AwaitingAcceptance { milestone }) => {
            let mut message =
                format!("Mission {mission}: milestone {milestone} is validated and waits for your acceptance.");
            // The gate shows what is still open, not only how much.
            let open: Vec<String> = state
                .view(&mission)
                .map(|view| view.findings.iter().filter(|f| f.milestone == milestone).map(|f| f.one_line()).collect())
                .unwrap_or_default();
            if !open.is_empty() {
                message.push_str(&format!(" Open findings: {}.", open.join("; ")));
            }
            match ask(&state, message, &["Accept", "Reject"]).await.as_deref() {
                Some("Accept") => {
                    let command = Command::Accept { milestone: Some(milestone) };
                    report(&state, session::control(&state, mission, command).await).await;
                }
                Some("Reject") => {
                    let message = format!(
                        "Mission {mission}: a rejection needs feedback. Use your editor's \"Missions: reject milestone\" (the missions.rejectMilestone command with `feedback`), or `missions reject {mission} {milestone} --feedback \"…\"`."
                    );
                    state.client.show_message(MessageType::INFO, message).await;
                }
                _ => {}
            }
        }
        Ok(Outcome::Paused { reason, detail }) => {
            // A pause (a conflict too) offers the way on, so a dismissed note is not a dead end.
            let kind = if reason == missions_core::mission::PauseReason::Conflict {
                MessageType::WARNING
            } else {
                MessageType::INFO
            };
            let message = format!("Mission {mission} is paused ({reason}): {}", detail.unwrap_or_default());
            if ask_as(&state, kind, message, &["Resume"]).await.as_deref() == Some("Resume") {
                report(&state, session::control(&state, mission, Command::Resume).await).await;
            }
        }
        Ok(Outcome::Completed) => {
            let message = format!("Mission {mission} is complete; its branch missions/{mission} is ready to merge.");
            state.client.show_message(MessageType::INFO, message).await;
        }
        Ok(Outcome::Failed { detail }) => {
            state
                .client
                .show_message(MessageType::ERROR, format!("Mission {mission} failed: {}", detail.unwrap_or_default()))
                .await;
        }
        Ok(Outcome::Cancelled) => {
            state.client.show_message(MessageType::INFO, format!("Mission {mission} is cancelled.")).await
        }
    }
}
