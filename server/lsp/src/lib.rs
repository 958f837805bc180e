//! The Missions language server: the only crate that knows LSP.
//!
//! It translates between LSP messages and the engine and owns the server's capabilities
//! (SPEC §8). `workspace/executeCommand` runs the `missions.*` commands ([`commands`]); missions
//! this server starts or drives on run on threads of their own ([`driver`]), reporting
//! `$/progress`, asking at gates with `window/showMessageRequest`, and sending
//! `missions/didChange` with the status snapshot. Open findings are published as diagnostics,
//! handoffs answer hovers on the lines their features changed ([`documents`] keeps those
//! ranges following the user's edits), and code actions and lenses offer fixing, dismissing,
//! accepting and rejecting. Translation to LSP shapes lives in [`to_proto`].
//!
//! Invariant: a bad request is answered with a JSON-RPC error that says what is wrong; no
//! request can make the server exit.

mod commands;
pub mod documents;
mod driver;
mod feedback;
pub mod to_proto;
pub mod transport;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use missions_core::config::{Layer, LoadedConfig, ProcessEnvironment};
use missions_core::mission::MissionState;
use missions_core::status::{StatusSnapshot, workspace_snapshots};
use serde_json::{Value, json};
use tower_lsp_server::jsonrpc::{Error, ErrorCode, Result};
use tower_lsp_server::ls_types::notification::Notification;
use tower_lsp_server::ls_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionParams, CodeActionProviderCapability,
    CodeActionResponse, CodeLens, CodeLensOptions, CodeLensParams, Command, DidChangeConfigurationParams,
    DidChangeTextDocumentParams, DidCloseTextDocumentParams, DidOpenTextDocumentParams, DidSaveTextDocumentParams,
    ExecuteCommandOptions, ExecuteCommandParams, Hover, HoverContents, HoverParams, HoverProviderCapability,
    InitializeParams, InitializeResult, InitializedParams, LSPAny, MarkupContent, MarkupKind, MessageType, Position,
    Range, ServerCapabilities, ServerInfo, TextDocumentSyncCapability, TextDocumentSyncKind, TextDocumentSyncOptions,
    TextDocumentSyncSaveOptions, Uri,
};
use tower_lsp_server::{Client, LanguageServer, LspService, Server};

use crate::documents::{Documents, Edit, TrackedRange};

/// The commands this server executes, as advertised in its capabilities.
pub const COMMANDS: &[&str] = &[
    "missions.backlog",
    "missions.start",
    "missions.approvePlan",
    "missions.acceptMilestone",
    "missions.rejectMilestone",
    "missions.rollback",
    "missions.pause",
    "missions.resume",
    "missions.cancel",
    "missions.status",
    "missions.fixFinding",
    "missions.dismissFinding",
    "missions.courseCorrect",
    "missions.openPlan",
];

/// `missions/didChange`: the status snapshot of a mission that changed.
pub enum MissionsDidChange {}

impl Notification for MissionsDidChange {
    type Params = Value;
    const METHOD: &'static str = "missions/didChange";
}

/// What the client said it supports.
#[derive(Debug, Clone, Copy, Default)]
struct ClientFlags {
    related_information: bool,
    work_done_progress: bool,
    show_document: bool,
}

/// The server's state, shared with the threads that drive missions.
/// The editor's list of unsaved files once written: its path and the paths it holds.
type EditorFileSlot = Arc<Mutex<Option<(PathBuf, Vec<String>)>>>;
/// Missions being driven by this server, by id, with their workspace.
pub(crate) type Driving = Arc<Mutex<std::collections::BTreeMap<String, PathBuf>>>;

pub(crate) struct State {
    client: Client,
    workspace: RwLock<Option<PathBuf>>,
    /// `initializationOptions`, replaced by `workspace/didChangeConfiguration`.
    settings: RwLock<Option<Value>>,
    documents: Arc<Documents>,
    flags: RwLock<ClientFlags>,
    /// Paths that have diagnostics published, so they can be cleared.
    published: Mutex<BTreeSet<String>>,
    /// Missions this server is driving right now, with their workspace; shared with
    /// [`run_stdio`], which pauses them when the server ends.
    driving: Driving,
    /// `.missions/editors/<pid>.json` once this server has written it, and what it holds;
    /// shared with [`run_stdio`], which removes the file when the server ends.
    editor_file: EditorFileSlot,
    /// Where drivers report; the receiving end is taken by the forwarding task.
    events: driver::Events,
    events_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<driver::DriverEvent>>>,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

pub(crate) fn invalid_params(message: impl Into<String>) -> Error {
    Error { code: ErrorCode::InvalidParams, message: message.into().into(), data: None }
}

pub(crate) fn internal(message: impl Into<String>) -> Error {
    Error { code: ErrorCode::InternalError, message: message.into().into(), data: None }
}

impl State {
    pub(crate) fn workspace(&self) -> Result<PathBuf> {
        read(&self.workspace)
            .ok_or_else(|| invalid_params("the client opened no workspace folder; Missions works on a workspace"))
    }

    /// The effective configuration: files, then the editor's settings.
    pub(crate) fn config(&self) -> Result<LoadedConfig> {
        let workspace = self.workspace()?;
        let mut extra = Vec::new();
        if let Some(settings) = read(&self.settings).filter(|s| s.is_object()) {
            // Clients send either the settings themselves or them under a `missions` key.
            let settings = settings.get("missions").cloned().unwrap_or(settings);
            let (layer, warnings) =
                Layer::from_json("editor settings", settings).map_err(|e| invalid_params(e.to_string()))?;
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            extra.push(layer);
        }
        LoadedConfig::load(&workspace, &ProcessEnvironment, extra).map_err(|e| invalid_params(e.to_string()))
    }

    pub(crate) fn snapshots(&self) -> Vec<StatusSnapshot> {
        let Ok(workspace) = self.workspace() else { return Vec::new() };
        workspace_snapshots(&workspace).map(|status| status.snapshots).unwrap_or_default()
    }

    fn relative(&self, uri: &Uri) -> Option<String> {
        let workspace = read(&self.workspace)?;
        let path = uri.to_file_path()?;
        Some(path.strip_prefix(&workspace).ok()?.to_string_lossy().replace('\\', "/"))
    }

    /// The UTF-16 line lengths of a workspace file: its open buffer, else the file on disk
    /// (empty when it cannot be read).
    fn line_lengths(&self, workspace: &Path, path: &str) -> Vec<u32> {
        if let Some(lengths) = self.documents.line_lengths(path) {
            return lengths;
        }
        missions_core::store::read_bounded(&workspace.join(path), 64 * 1024 * 1024)
            .map(|bytes| to_proto::utf16_line_lengths(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default()
    }

    /// Lists the paths with unsaved changes in `.missions/editors/<pid>.json` (SPEC §4, §8), so
    /// that every driver, in this process or another, refuses a worker's write to them. The
    /// file is written only when the list changes, and only once there is something to list.
    fn publish_unsaved(&self) {
        let Some(workspace) = read(&self.workspace) else { return };
        let unsaved = self.documents.unsaved();
        let mut written = self.editor_file.lock().unwrap_or_else(|p| p.into_inner());
        if written.as_ref().map(|(_, paths)| paths) == Some(&unsaved) || (written.is_none() && unsaved.is_empty()) {
            return;
        }
        let path = missions_engine::mission::editors_dir(&workspace).join(format!("{}.json", std::process::id()));
        let file = missions_engine::mission::EditorFile { pid: std::process::id(), paths: unsaved.clone() };
        let bytes = serde_json::to_vec(&file).unwrap_or_default();
        match missions_core::store::write_atomically(&path, &bytes) {
            Ok(()) => *written = Some((path, unsaved)),
            Err(error) => tracing::error!("cannot list the unsaved files for other drivers: {error}"),
        }
    }

    /// Publishes the diagnostics of every open finding and clears files that have none left;
    /// sends `missions/didChange` for `changed`.
    pub(crate) async fn refresh(&self, changed: Option<&str>) {
        let Ok(workspace) = self.workspace() else { return };
        let snapshots = self.snapshots();
        let flags = read(&self.flags);
        let line_lengths = |path: &str| self.line_lengths(&workspace, path);
        let by_path = to_proto::diagnostics(&workspace, &snapshots, flags.related_information, &line_lengths);
        let previous = std::mem::take(&mut *self.published.lock().unwrap_or_else(|p| p.into_inner()));
        for path in previous.iter().filter(|p| !by_path.contains_key(*p)) {
            if let Some(uri) = to_proto::uri(&workspace.join(path)) {
                self.client.publish_diagnostics(uri, Vec::new(), None).await;
            }
        }
        for (path, diagnostics) in &by_path {
            if let Some(uri) = to_proto::uri(&workspace.join(path)) {
                let version = self.documents.version(path);
                self.client.publish_diagnostics(uri, diagnostics.clone(), version).await;
            }
        }
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = by_path.keys().cloned().collect();
        self.documents.reset_ranges();
        if let Some(id) = changed
            && let Some(snapshot) = snapshots.iter().find(|s| s.mission.id == id)
            && let Ok(value) = serde_json::to_value(snapshot)
        {
            self.client.send_notification::<MissionsDidChange>(value).await;
        }
    }

    /// The ranges features changed in `path`, from every mission's handoffs, oldest first.
    fn recorded_ranges(&self, path: &str) -> Vec<TrackedRange> {
        let mut ranges = Vec::new();
        for snapshot in self.snapshots() {
            let Ok(workspace) = self.workspace() else { break };
            let Ok(dir) = missions_core::store::mission_dir(&workspace, &snapshot.mission.id) else { continue };
            let Ok((projection, _)) = missions_core::store::load_projection(&dir) else { continue };
            let order: Vec<String> = projection
                .plan
                .iter()
                .flat_map(|p| p.milestones.iter())
                .flat_map(|m| m.features.iter().map(|f| f.id.clone()))
                .collect();
            for feature in order {
                let Some(handoff) = projection.handoffs.get(&feature) else { continue };
                for change in handoff.files_changed.iter().filter(|c| c.path == path) {
                    for [first, last] in &change.ranges {
                        ranges.push(TrackedRange {
                            mission: snapshot.mission.id.clone(),
                            feature: feature.clone(),
                            first: *first,
                            last: *last,
                        });
                    }
                }
            }
        }
        ranges
    }
}

pub struct Backend {
    state: Arc<State>,
}

fn command(title: &str, name: &str, argument: Value) -> Command {
    Command { title: title.to_owned(), command: name.to_owned(), arguments: Some(vec![argument]) }
}

/// The single JSON-object argument of a Missions command (SPEC §8); none means `{}`.
fn command_argument(params: &ExecuteCommandParams) -> Result<serde_json::Map<String, Value>> {
    match params.arguments.as_slice() {
        [] => Ok(serde_json::Map::new()),
        [Value::Object(map)] => Ok(map.clone()),
        _ => Err(invalid_params(format!("{} takes one JSON object argument", params.command))),
    }
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        let folder = params.workspace_folders.as_ref().and_then(|folders| folders.first()).map(|f| f.uri.clone());
        #[allow(deprecated)]
        let root = folder.or(params.root_uri.clone());
        let path = root.as_ref().and_then(|uri| uri.to_file_path()).map(|p| p.into_owned());
        *self.state.workspace.write().unwrap_or_else(|p| p.into_inner()) =
            path.and_then(|p| p.canonicalize().ok().or(Some(p)));
        *self.state.settings.write().unwrap_or_else(|p| p.into_inner()) = params.initialization_options.clone();
        let capabilities = &params.capabilities;
        let flags = ClientFlags {
            related_information: capabilities
                .text_document
                .as_ref()
                .and_then(|t| t.publish_diagnostics.as_ref())
                .and_then(|p| p.related_information)
                .unwrap_or(false),
            work_done_progress: capabilities.window.as_ref().and_then(|w| w.work_done_progress).unwrap_or(false),
            show_document: capabilities
                .window
                .as_ref()
                .and_then(|w| w.show_document.as_ref())
                .is_some_and(|s| s.support),
        };
        *self.state.flags.write().unwrap_or_else(|p| p.into_inner()) = flags;
        Ok(InitializeResult {
            capabilities: ServerCapabilities {
                text_document_sync: Some(TextDocumentSyncCapability::Options(TextDocumentSyncOptions {
                    open_close: Some(true),
                    change: Some(TextDocumentSyncKind::INCREMENTAL),
                    save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                    ..TextDocumentSyncOptions::default()
                })),
                hover_provider: Some(HoverProviderCapability::Simple(true)),
                code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
                code_lens_provider: Some(CodeLensOptions { resolve_provider: Some(false) }),
                execute_command_provider: Some(ExecuteCommandOptions {
                    commands: COMMANDS.iter().map(|c| (*c).to_owned()).collect(),
                    ..ExecuteCommandOptions::default()
                }),
                ..ServerCapabilities::default()
            },
            server_info: Some(ServerInfo { name: "missions".into(), version: Some(env!("CARGO_PKG_VERSION").into()) }),
            ..InitializeResult::default()
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        let message = match self.state.workspace() {
            Ok(path) => format!("Missions ready in {}", path.display()),
            Err(_) => "Missions started without a workspace folder".to_owned(),
        };
        self.state.client.log_message(MessageType::INFO, message).await;
        let receiver = self.state.events_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(receiver) = receiver {
            tokio::spawn(driver::forward(self.state.clone(), receiver));
        }
        self.state.refresh(None).await;
        tokio::spawn(driver::announce(self.state.clone()));
    }

    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        if let Some(path) = self.state.relative(&params.text_document.uri) {
            self.state.documents.open(&path, &params.text_document.text, params.text_document.version);
            self.state.publish_unsaved();
        }
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let Some(path) = self.state.relative(&params.text_document.uri) else { return };
        let edits: Vec<Edit<'_>> = params
            .content_changes
            .iter()
            .map(|change| Edit {
                span: change.range.map(|r| (r.start.line, r.start.character, r.end.line, r.end.character)),
                text: &change.text,
            })
            .collect();
        self.state.documents.change(&path, params.text_document.version, &edits);
        self.state.publish_unsaved();
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        if let Some(path) = self.state.relative(&params.text_document.uri) {
            self.state.documents.saved(&path);
            self.state.publish_unsaved();
            feedback::saved(&self.state, &path).await;
        }
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        if let Some(path) = self.state.relative(&params.text_document.uri) {
            self.state.documents.close(&path);
            self.state.publish_unsaved();
        }
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        *self.state.settings.write().unwrap_or_else(|p| p.into_inner()) = Some(params.settings);
    }

    async fn hover(&self, params: HoverParams) -> Result<Option<Hover>> {
        let position = params.text_document_position_params.position;
        let Some(path) = self.state.relative(&params.text_document_position_params.text_document.uri) else {
            return Ok(None);
        };
        let ranges = self.state.documents.ranges_at(&path, position.line + 1, || self.state.recorded_ranges(&path));
        if ranges.is_empty() {
            return Ok(None);
        }
        let workspace = self.state.workspace()?;
        let mut parts = Vec::new();
        for range in &ranges {
            let Ok(dir) = missions_core::store::mission_dir(&workspace, &range.mission) else { continue };
            let Ok((projection, _)) = missions_core::store::load_projection(&dir) else { continue };
            let Some(handoff) = projection.handoffs.get(&range.feature) else { continue };
            let title = projection
                .plan
                .iter()
                .flat_map(|p| p.milestones.iter())
                .flat_map(|m| m.features.iter())
                .find(|f| f.id == range.feature)
                .map(|f| f.title.clone())
                .unwrap_or_default();
            parts.push(to_proto::hover_markdown(&range.mission, &title, handoff));
        }
        if parts.is_empty() {
            return Ok(None);
        }
        let first = &ranges[0];
        Ok(Some(Hover {
            contents: HoverContents::Markup(MarkupContent {
                kind: MarkupKind::Markdown,
                value: parts.join("\n---\n\n"),
            }),
            range: Some(to_proto::line_range(&self.state.line_lengths(&workspace, &path), first.first, first.last)),
        }))
    }

    async fn code_action(&self, params: CodeActionParams) -> Result<Option<CodeActionResponse>> {
        let mut actions = Vec::new();
        for diagnostic in params.context.diagnostics.iter().filter(|d| d.source.as_deref() == Some("missions")) {
            let Some(data) = &diagnostic.data else { continue };
            let argument = json!({"missionId": data["missionId"], "findingId": data["findingId"]});
            for (title, name) in [
                ("Missions: fix this finding", "missions.fixFinding"),
                ("Missions: dismiss finding", "missions.dismissFinding"),
            ] {
                actions.push(CodeActionOrCommand::CodeAction(CodeAction {
                    title: title.into(),
                    kind: Some(CodeActionKind::QUICKFIX),
                    diagnostics: Some(vec![diagnostic.clone()]),
                    command: Some(command(title, name, argument.clone())),
                    ..CodeAction::default()
                }));
            }
        }
        let snapshots = self.state.snapshots();
        // A dismissed prompt is never the only way on (SPEC §8): while a plan waits, approving
        // and opening it are actions in any file; while a mission is paused, so is resuming.
        for snapshot in &snapshots {
            let id = &snapshot.mission.id;
            let argument = json!({"missionId": id});
            match snapshot.mission.state {
                MissionState::AwaitingApproval => {
                    let approve = format!("Missions: approve plan {id}");
                    actions.push(CodeActionOrCommand::Command(command(
                        &approve,
                        "missions.approvePlan",
                        argument.clone(),
                    )));
                    actions.push(CodeActionOrCommand::Command(command(
                        "Missions: open plan",
                        "missions.openPlan",
                        argument,
                    )));
                }
                state if state == MissionState::Paused || snapshot.interrupted => {
                    let resume = format!("Missions: resume mission {id}");
                    actions.push(CodeActionOrCommand::Command(command(&resume, "missions.resume", argument)));
                }
                _ => {}
            }
        }
        for (mission, milestone, title) in waiting_milestones(&snapshots) {
            let argument = json!({"missionId": mission, "milestoneId": milestone});
            let accept = format!("Missions: accept milestone {milestone} ({title})");
            let reject = format!("Missions: reject milestone {milestone}…");
            actions.push(CodeActionOrCommand::Command(command(&accept, "missions.acceptMilestone", argument.clone())));
            actions.push(CodeActionOrCommand::Command(command(&reject, "missions.rejectMilestone", argument)));
        }
        Ok(Some(actions))
    }

    async fn code_lens(&self, params: CodeLensParams) -> Result<Option<Vec<CodeLens>>> {
        let Some(path) = self.state.relative(&params.text_document.uri) else { return Ok(None) };
        let workspace = self.state.workspace()?;
        let mut lenses = Vec::new();
        let snapshots = self.state.snapshots();
        // At the top of a waiting plan's plan.md and contract.md: approve it.
        for snapshot in snapshots.iter().filter(|s| s.mission.state == MissionState::AwaitingApproval) {
            let id = &snapshot.mission.id;
            let plan_files = [format!(".missions/{id}/plan.md"), format!(".missions/{id}/contract.md")];
            if plan_files.contains(&path) {
                let top = Range::new(Position::new(0, 0), Position::new(0, 0));
                let label = format!("Missions: approve plan {id}");
                lenses.push(CodeLens {
                    range: top,
                    command: Some(command(&label, "missions.approvePlan", json!({"missionId": id}))),
                    data: None,
                });
            }
        }
        for (mission, milestone, title) in waiting_milestones(&snapshots) {
            let Ok(dir) = missions_core::store::mission_dir(&workspace, &mission) else { continue };
            let Ok((projection, _)) = missions_core::store::load_projection(&dir) else { continue };
            let features: Vec<String> = projection
                .plan
                .iter()
                .flat_map(|p| p.milestone(&milestone))
                .flat_map(|m| m.features.iter().map(|f| f.id.clone()))
                .collect();
            let touched = features
                .iter()
                .filter_map(|f| projection.handoffs.get(f))
                .any(|h| h.files_changed.iter().any(|c| c.path == path));
            if touched {
                let top = Range::new(Position::new(0, 0), Position::new(0, 0));
                let label = format!("Missions: milestone {milestone} ({title}) waits for acceptance — accept");
                let argument = json!({"missionId": mission, "milestoneId": milestone});
                lenses.push(CodeLens {
                    range: top,
                    command: Some(command(&label, "missions.acceptMilestone", argument)),
                    data: None,
                });
            }
        }
        Ok(Some(lenses))
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<LSPAny>> {
        let argument = command_argument(&params)?;
        commands::execute(&self.state, &params.command, &argument).await.map(Some)
    }
}

/// `(mission, milestone, title)` of each milestone waiting for acceptance.
fn waiting_milestones(snapshots: &[StatusSnapshot]) -> Vec<(String, String, String)> {
    snapshots
        .iter()
        .filter(|s| s.mission.state == MissionState::AwaitingAcceptance)
        .filter_map(|s| {
            let milestone = s
                .plan
                .as_ref()?
                .milestones
                .iter()
                .find(|m| m.status == missions_core::mission::WorkStatus::Validated)?;
            Some((s.mission.id.clone(), milestone.id.clone(), milestone.title.clone()))
        })
        .collect()
}

/// The path of a mission's file for `window/showDocument`.
pub(crate) fn mission_file(workspace: &Path, mission: &str, name: &str) -> PathBuf {
    workspace.join(".missions").join(mission).join(name)
}

/// Serves LSP on stdin/stdout until the client says `exit` (or its input ends), through the
/// guard of [`transport`]; returns the exit status LSP asks for: 0 after `shutdown` then
/// `exit`, else 1.
pub async fn run_stdio() -> u8 {
    let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let editor_file: EditorFileSlot = Arc::default();
    let server_editor_file = editor_file.clone();
    let driving: Driving = Arc::default();
    let server_driving = driving.clone();
    let (service, socket) = LspService::new(move |client| Backend {
        state: Arc::new(State {
            events,
            events_rx: Mutex::new(Some(events_rx)),
            client,
            workspace: RwLock::new(None),
            settings: RwLock::new(None),
            documents: Arc::new(Documents::default()),
            flags: RwLock::new(ClientFlags::default()),
            published: Mutex::new(BTreeSet::new()),
            driving: server_driving.clone(),
            editor_file: server_editor_file.clone(),
        }),
    });
    let session = Arc::new(transport::Session::default());
    let (client_side, server_input) = tokio::io::duplex(1024 * 1024);
    let (server_output, merged) = tokio::io::duplex(1024 * 1024);
    let (answers, answers_rx) = tokio::sync::mpsc::channel(256);
    let reader = tokio::spawn(transport::read_client(tokio::io::stdin(), client_side, answers, session.clone()));
    let writer = tokio::spawn(transport::write_client(merged, answers_rx, tokio::io::stdout()));
    Server::new(server_input, server_output, socket).serve(service).await;
    // The server is done; what it wrote goes out before the process ends. The reader may be
    // blocked on an input the client keeps open, so it is not waited for.
    reader.abort();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
    // Missions this server drove do not stay `running` with nothing driving them: each is
    // paused, so every other view tells the truth and nothing resumes it silently.
    let driven: Vec<(String, PathBuf)> =
        driving.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(id, ws)| (id.clone(), ws.clone())).collect();
    let pauses: Vec<_> = driven
        .into_iter()
        .map(|(id, workspace)| {
            tokio::task::spawn_blocking(move || {
                let pause = missions_engine::mission::Command::Pause { note: Some("the editor closed".into()) };
                let verdict = missions_engine::mission::Mission::ask_driver(
                    &workspace,
                    &id,
                    &pause,
                    missions_engine::mission::DRIVER_ACK_LIMIT,
                );
                if verdict.is_none() {
                    tracing::warn!("mission {id} did not pause in time; it shows as interrupted");
                }
            })
        })
        .collect();
    for pause in pauses {
        let _ = pause.await;
    }
    // The editor's list goes with the editor (drivers also ignore a list whose process is gone).
    if let Some((path, _)) = editor_file.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = std::fs::remove_file(path);
    }
    session.exit_status()
}
