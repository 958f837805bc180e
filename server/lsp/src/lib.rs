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
pub mod from_proto;
mod session;
pub mod to_proto;
pub mod transport;
pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use missions_core::config::{Layer, LoadedConfig, ProcessEnvironment};
use missions_core::mission::Finding;
use missions_core::status::StatusSnapshot;
use missions_core::sync::{lock, read, write};
use serde_json::Value;
use tower_lsp_server::jsonrpc::{Error, ErrorCode, Result};
use tower_lsp_server::ls_types::notification::Notification;
use tower_lsp_server::ls_types::{
    CodeActionParams, CodeActionProviderCapability, CodeActionResponse, CodeLens, CodeLensOptions, CodeLensParams,
    DidChangeConfigurationParams, DidChangeTextDocumentParams, DidCloseTextDocumentParams, DidOpenTextDocumentParams,
    DidSaveTextDocumentParams, ExecuteCommandOptions, ExecuteCommandParams, Hover, HoverParams,
    HoverProviderCapability, InitializeParams, InitializeResult, InitializedParams, LSPAny, MessageType,
    ServerCapabilities, ServerInfo, TextDocumentSyncCapability, TextDocumentSyncKind, TextDocumentSyncOptions,
    TextDocumentSyncSaveOptions, Uri,
};
use tower_lsp_server::{Client, LanguageServer, LspService, Server};

use crate::documents::{Documents, TrackedRange};
use crate::views::{MissionView, Views};

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

/// What a Missions diagnostic carries in its `data`, for the code actions on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticData {
    pub mission_id: String,
    pub finding_id: String,
}

/// What the client said it supports.
#[derive(Debug, Clone, Copy, Default)]
struct ClientFlags {
    related_information: bool,
    work_done_progress: bool,
    show_document: bool,
}

/// The editor's list of unsaved files once written: its path and the paths it holds.
type EditorFileSlot = Arc<Mutex<Option<(PathBuf, Vec<String>)>>>;
/// Missions being driven by this server, by id, with their workspace.
pub(crate) type Driving = Arc<Mutex<std::collections::BTreeMap<String, PathBuf>>>;

/// What was last published for one file: the findings it showed (by mission, with the line of
/// their assertion in `contract.md`) and the document version their ranges were fitted to. A
/// file is published again only when one of these changes; a closed file changed on disk
/// keeps ranges fitted to its old length until its findings change.
#[derive(PartialEq)]
struct Published {
    findings: Vec<(String, Finding, Option<u32>)>,
    version: Option<i32>,
}

/// How often the server looks for events other processes appended (a `stat` per mission).
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Background refreshes (diagnostics and `missions/didChange`) are at least this far apart.
pub(crate) const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(300);

/// The server's state, shared with the threads that drive missions.
pub(crate) struct State {
    client: Client,
    workspace: RwLock<Option<PathBuf>>,
    /// `initializationOptions`, replaced by `workspace/didChangeConfiguration`.
    settings: RwLock<Option<Value>>,
    documents: Arc<Documents>,
    flags: RwLock<ClientFlags>,
    /// The workspace's missions, followed in memory.
    views: Mutex<Views>,
    /// Missions whose view changed since `missions/didChange` was last sent for them.
    announced: Mutex<BTreeMap<String, Arc<MissionView>>>,
    /// What each file's diagnostics were last published from.
    published: tokio::sync::Mutex<BTreeMap<String, Published>>,
    /// When the last background refresh finished.
    last_refresh: Mutex<Option<std::time::Instant>>,
    /// A background refresh is under way, and whether one was asked for since it began.
    refreshing: std::sync::atomic::AtomicBool,
    refresh_wanted: std::sync::atomic::AtomicBool,
    /// Missions this server is driving right now, with their workspace; shared with
    /// [`run_stdio`], which pauses them when the server ends.
    driving: Driving,
    /// `.missions/editors/<pid>.json` once this server has written it, and what it holds;
    /// shared with [`run_stdio`], which removes the file when the server ends.
    editor_file: EditorFileSlot,
    /// The tool each driven mission's active run called last: `(run id, "tool detail")` by
    /// mission. Tool calls are not events, so this is what only a driver knows.
    activity: Mutex<HashMap<String, (String, String)>>,
    /// Where drivers report; the receiving end is taken by the forwarding task.
    events: session::Events,
    events_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<session::DriverEvent>>>,
}

/// A copy of what `lock` holds now.
fn current<T: Clone>(lock: &RwLock<T>) -> T {
    read(lock).clone()
}

pub(crate) fn invalid_params(message: impl Into<String>) -> Error {
    Error { code: ErrorCode::InvalidParams, message: message.into().into(), data: None }
}

pub(crate) fn internal(message: impl Into<String>) -> Error {
    Error { code: ErrorCode::InternalError, message: message.into().into(), data: None }
}

impl State {
    pub(crate) fn workspace(&self) -> Result<PathBuf> {
        current(&self.workspace)
            .ok_or_else(|| invalid_params("the client opened no workspace folder; Missions works on a workspace"))
    }

    /// The effective configuration: files, then the editor's settings.
    pub(crate) fn config(&self) -> Result<LoadedConfig> {
        let workspace = self.workspace()?;
        let mut extra = Vec::new();
        if let Some(settings) = current(&self.settings).filter(|s| s.is_object()) {
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

    /// Every mission's view, brought up to date with its log first (a `stat` per mission
    /// when nothing changed). Changes found here are announced by the next refresh.
    pub(crate) fn views(&self) -> Vec<Arc<MissionView>> {
        self.sync_views().0
    }

    /// The views and whether any changed since the last look.
    fn sync_views(&self) -> (Vec<Arc<MissionView>>, bool) {
        let Ok(workspace) = self.workspace() else { return (Vec::new(), false) };
        let mut views = lock(&self.views);
        let changed = views.sync(&workspace);
        let any = !changed.is_empty();
        if any {
            // Handoff ranges come from the views; open documents track them afresh.
            self.documents.reset_ranges();
        }
        (views.all(), any)
    }

    /// The view of mission `id`, up to date.
    pub(crate) fn view(&self, id: &str) -> Option<Arc<MissionView>> {
        self.views().into_iter().find(|v| v.id() == id)
    }

    fn relative(&self, uri: &Uri) -> Option<String> {
        from_proto::relative_path(&current(&self.workspace)?, uri)
    }

    /// The UTF-16 line lengths of a workspace file: its open buffer, else the file on disk
    /// (empty when it cannot be read).
    fn line_lengths(&self, workspace: &Path, path: &str) -> Vec<u32> {
        if let Some(lengths) = self.documents.line_lengths(path) {
            return lengths;
        }
        missions_core::store::read_bounded(&workspace.join(path), 64 * 1024 * 1024)
            .map(|bytes| documents::utf16_line_lengths(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default()
    }

    /// Lists the paths with unsaved changes in `.missions/editors/<pid>.json` (SPEC §4, §8), so
    /// that every driver, in this process or another, refuses a worker's write to them. The
    /// file is written only when the list changes, and only once there is something to list.
    fn publish_unsaved(&self) {
        let Some(workspace) = current(&self.workspace) else { return };
        let unsaved = self.documents.unsaved();
        let mut written = lock(&self.editor_file);
        if written.as_ref().map(|(_, paths)| paths) == Some(&unsaved) || (written.is_none() && unsaved.is_empty()) {
            return;
        }
        let path = missions_core::layout::editors_dir(&workspace).join(format!("{}.json", std::process::id()));
        let file = missions_engine::mission::EditorFile { pid: std::process::id(), paths: unsaved.clone() };
        let bytes = serde_json::to_vec(&file).unwrap_or_default();
        match missions_core::store::write_atomically(&path, &bytes) {
            Ok(()) => *written = Some((path, unsaved)),
            Err(error) => tracing::error!("cannot list the unsaved files for other drivers: {error}"),
        }
    }

    /// Publishes the diagnostics of the files whose open findings (or open buffer) changed
    /// since they were last published, clears files that have none left, and sends
    /// `missions/didChange` for every mission whose view is not the one last announced, and
    /// for `changed`.
    pub(crate) async fn refresh(&self, changed: Option<&str>) {
        let Ok(workspace) = self.workspace() else { return };
        // One refresh at a time, each from views taken once it runs, so two never publish a
        // file or a mission in the wrong order.
        let mut published = self.published.lock().await;
        let views = self.views();
        let related_information = current(&self.flags).related_information;
        let by_path = to_proto::open_findings_by_path(&views);
        let gone: Vec<String> = published.keys().filter(|p| !by_path.contains_key(p.as_str())).cloned().collect();
        for path in gone {
            published.remove(&path);
            if let Some(uri) = to_proto::uri(&workspace.join(&path)) {
                self.client.publish_diagnostics(uri, Vec::new(), None).await;
            }
        }
        for (path, findings) in &by_path {
            let version = self.documents.version(path);
            let now = Published {
                findings: findings
                    .iter()
                    .map(|(view, f)| {
                        let contract_line = f.assertion.as_ref().and_then(|a| view.contract_lines.get(a)).copied();
                        (view.id().to_owned(), (*f).clone(), contract_line)
                    })
                    .collect(),
                version,
            };
            if published.get(*path) == Some(&now) {
                continue;
            }
            let lengths = self.line_lengths(&workspace, path);
            let diagnostics = to_proto::diagnostics(&workspace, findings, related_information, &lengths);
            if let Some(uri) = to_proto::uri(&workspace.join(path)) {
                self.client.publish_diagnostics(uri, diagnostics, version).await;
            }
            published.insert((*path).to_owned(), now);
        }
        for view in views.iter().filter(|v| changed == Some(v.id()) || !self.is_announced(v)) {
            lock(&self.announced).insert(view.id().to_owned(), view.clone());
            if let Ok(value) = serde_json::to_value(self.with_activity(view.status())) {
                self.client.send_notification::<MissionsDidChange>(value).await;
            }
        }
        drop(published);
    }

    /// `snapshot` with the tool its active run called last, when this server drives that run.
    pub(crate) fn with_activity(&self, mut snapshot: StatusSnapshot) -> StatusSnapshot {
        if let Some(run) = snapshot.active_run.as_mut()
            && let Some((run_id, tool)) = lock(&self.activity).get(&snapshot.mission.id)
            && *run_id == run.run_id
        {
            run.tool = Some(tool.clone());
        }
        snapshot
    }

    /// Notes the tool a driven run called (`None`: the mission's driver finished); the next
    /// refresh announces the mission again, so Mission Control shows what runs now.
    pub(crate) fn note_activity(&self, mission: &str, activity: Option<(String, String)>) {
        match activity {
            Some(activity) => lock(&self.activity).insert(mission.to_owned(), activity),
            None => lock(&self.activity).remove(mission),
        };
        lock(&self.announced).remove(mission);
    }

    /// Whether `view` is the view of its mission last sent in `missions/didChange`.
    fn is_announced(&self, view: &Arc<MissionView>) -> bool {
        lock(&self.announced).get(view.id()).is_some_and(|sent| Arc::ptr_eq(sent, view))
    }

    /// Refreshes soon, in the background: requests that found a change, the views' tick and
    /// drivers' reports all come here. At most one refresh runs at a time and they are at
    /// least [`REFRESH_INTERVAL`] apart, so a mission recording events as fast as it can costs
    /// a few refreshes a second (each a `missions/didChange` with the whole snapshot), never one
    /// per event or per request.
    pub(crate) async fn refresh_soon(self: Arc<Self>) {
        use std::sync::atomic::Ordering::SeqCst;
        // Ask first, then see whether a refresher runs: whoever runs checks the request after
        // it lets go, so no request is left behind.
        self.refresh_wanted.store(true, SeqCst);
        if self.refreshing.swap(true, SeqCst) {
            return;
        }
        loop {
            while self.refresh_wanted.swap(false, SeqCst) {
                let since = lock(&self.last_refresh).map(|at| at.elapsed());
                if let Some(since) = since.filter(|since| *since < REFRESH_INTERVAL) {
                    tokio::time::sleep(REFRESH_INTERVAL - since).await;
                }
                self.refresh(None).await;
                *lock(&self.last_refresh) = Some(std::time::Instant::now());
            }
            self.refreshing.store(false, SeqCst);
            if !self.refresh_wanted.load(SeqCst) || self.refreshing.swap(true, SeqCst) {
                return;
            }
        }
    }

    /// Follows the missions' logs while the server runs, so what other processes append (a
    /// mission driven from the CLI) reaches the editor without a request asking.
    async fn follow(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(FOLLOW_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // A change found by this look, or by any other since the last refresh (a gate's
            // question, a feedback document), is shown.
            let (views, _) = self.sync_views();
            if views.iter().any(|view| !self.is_announced(view)) {
                self.clone().refresh_soon().await;
            }
        }
    }

    /// The ranges features changed in `path`, from every mission's handoffs, oldest first.
    fn recorded_ranges(&self, views: &[Arc<MissionView>], path: &str) -> Vec<TrackedRange> {
        views.iter().filter_map(|view| view.ranges.get(path)).flatten().cloned().collect()
    }
}

pub struct Backend {
    state: Arc<State>,
}

impl Backend {
    /// The views for a request; a change found on the way is published in the background,
    /// so the request does not wait for it.
    fn views(&self) -> Vec<Arc<MissionView>> {
        let (views, changed) = self.state.sync_views();
        if changed {
            tokio::spawn(self.state.clone().refresh_soon());
        }
        views
    }
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        let folder = params.workspace_folders.as_ref().and_then(|folders| folders.first()).map(|f| f.uri.clone());
        #[allow(deprecated)]
        let root = folder.or(params.root_uri.clone());
        let path = root.as_ref().and_then(|uri| uri.to_file_path()).map(|p| p.into_owned());
        *write(&self.state.workspace) = path.and_then(|p| p.canonicalize().ok().or(Some(p)));
        *write(&self.state.settings) = params.initialization_options.clone();
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
        *write(&self.state.flags) = flags;
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
        let receiver = lock(&self.state.events_rx).take();
        if let Some(receiver) = receiver {
            tokio::spawn(driver::forward(self.state.clone(), receiver));
        }
        self.state.refresh(None).await;
        tokio::spawn(self.state.clone().follow());
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
        let edits = from_proto::edits(&params.content_changes);
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
        *write(&self.state.settings) = Some(params.settings);
    }

    async fn hover(&self, params: HoverParams) -> Result<Option<Hover>> {
        let position = params.text_document_position_params.position;
        let Some(path) = self.state.relative(&params.text_document_position_params.text_document.uri) else {
            return Ok(None);
        };
        let views = self.views();
        let ranges =
            self.state.documents.ranges_at(&path, position.line + 1, || self.state.recorded_ranges(&views, &path));
        if ranges.is_empty() {
            return Ok(None);
        }
        let workspace = self.state.workspace()?;
        Ok(to_proto::hover(&views, &ranges, &self.state.line_lengths(&workspace, &path)))
    }

    async fn code_action(&self, params: CodeActionParams) -> Result<Option<CodeActionResponse>> {
        Ok(Some(to_proto::code_actions(&params.context.diagnostics, &self.views())))
    }

    async fn code_lens(&self, params: CodeLensParams) -> Result<Option<Vec<CodeLens>>> {
        let Some(path) = self.state.relative(&params.text_document.uri) else { return Ok(None) };
        Ok(Some(to_proto::code_lenses(&path, &self.views())))
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<LSPAny>> {
        let argument = from_proto::command_argument(&params).map_err(invalid_params)?;
        commands::execute(&self.state, &params.command, &argument).await.map(Some)
    }
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
            views: Mutex::new(Views::default()),
            announced: Mutex::new(BTreeMap::new()),
            activity: Mutex::new(HashMap::new()),
            published: tokio::sync::Mutex::new(BTreeMap::new()),
            refreshing: Default::default(),
            refresh_wanted: Default::default(),
            last_refresh: Mutex::new(None),
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
    let driven: Vec<(String, PathBuf)> = lock(&driving).iter().map(|(id, ws)| (id.clone(), ws.clone())).collect();
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
    if let Some((path, _)) = lock(&editor_file).take() {
        let _ = std::fs::remove_file(path);
    }
    session.exit_status()
}
