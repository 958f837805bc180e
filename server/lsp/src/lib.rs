//! The Missions language server: the only crate that knows LSP.
//!
//! It translates between LSP messages and the engine core and owns the server capabilities.
//! What it serves today: `initialize` (the workspace root comes from the first workspace
//! folder, else `rootUri`), and `workspace/executeCommand` for `missions.status`, which returns
//! the same snapshot `missions status --json` prints. The mission commands, diagnostics,
//! hovers, code actions and progress of SPEC §8 are built on this skeleton by the
//! language-server issue.
//!
//! Invariant: a bad request is answered with a JSON-RPC error that says what is wrong; no
//! request can make the server exit.

use std::path::PathBuf;
use std::sync::RwLock;

use serde_json::Value;
use tower_lsp_server::jsonrpc::{Error, ErrorCode, Result};
use tower_lsp_server::ls_types::{
    ExecuteCommandOptions, ExecuteCommandParams, InitializeParams, InitializeResult, InitializedParams, LSPAny,
    MessageType, ServerCapabilities, ServerInfo,
};
use tower_lsp_server::{Client, LanguageServer, LspService, Server};

use missions_core::status::{mission_snapshot, workspace_snapshots};
use missions_core::store::StoreError;

/// The commands this server executes, as advertised in its capabilities.
pub const COMMANDS: &[&str] = &["missions.status"];

pub struct Backend {
    client: Client,
    workspace: RwLock<Option<PathBuf>>,
}

fn invalid_params(message: impl Into<String>) -> Error {
    Error { code: ErrorCode::InvalidParams, message: message.into().into(), data: None }
}

/// Maps a store error to the JSON-RPC error a client sees.
fn store_error(error: StoreError) -> Error {
    match error {
        StoreError::NotFound { .. } => invalid_params(error.to_string()),
        other => Error { code: ErrorCode::InternalError, message: other.to_string().into(), data: None },
    }
}

/// The single JSON-object argument of a Missions command (SPEC §8); none means `{}`.
fn command_argument(params: &ExecuteCommandParams) -> Result<serde_json::Map<String, Value>> {
    match params.arguments.as_slice() {
        [] => Ok(serde_json::Map::new()),
        [Value::Object(map)] => Ok(map.clone()),
        _ => Err(invalid_params(format!("{} takes one JSON object argument", params.command))),
    }
}

impl Backend {
    fn workspace(&self) -> Result<PathBuf> {
        let guard = self.workspace.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard
            .clone()
            .ok_or_else(|| invalid_params("the client opened no workspace folder; Missions works on a workspace"))
    }

    fn status(&self, argument: &serde_json::Map<String, Value>) -> Result<Value> {
        let workspace = self.workspace()?;
        let encode = |value: std::result::Result<Value, serde_json::Error>| {
            value.map_err(|error| Error {
                code: ErrorCode::InternalError,
                message: error.to_string().into(),
                data: None,
            })
        };
        match argument.get("missionId") {
            None | Some(Value::Null) => {
                let status = workspace_snapshots(&workspace).map_err(store_error)?;
                for (id, error) in &status.unreadable {
                    tracing::warn!("mission {id} cannot be read: {error}");
                }
                encode(serde_json::to_value(status.snapshots))
            }
            Some(Value::String(id)) => {
                let (snapshot, _) = mission_snapshot(&workspace, id).map_err(store_error)?;
                encode(serde_json::to_value(snapshot))
            }
            Some(other) => Err(invalid_params(format!("missionId must be a string, not {other}"))),
        }
    }
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        let folder = params.workspace_folders.as_ref().and_then(|folders| folders.first()).map(|f| f.uri.clone());
        #[allow(deprecated)]
        let root = folder.or(params.root_uri.clone());
        let path = root.as_ref().and_then(|uri| uri.to_file_path()).map(|p| p.into_owned());
        *self.workspace.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = path;
        Ok(InitializeResult {
            capabilities: ServerCapabilities {
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
        let message = match self.workspace() {
            Ok(path) => format!("Missions ready in {}", path.display()),
            Err(_) => "Missions started without a workspace folder".to_owned(),
        };
        self.client.log_message(MessageType::INFO, message).await;
    }

    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<LSPAny>> {
        let argument = command_argument(&params)?;
        match params.command.as_str() {
            "missions.status" => self.status(&argument).map(Some),
            other => {
                Err(invalid_params(format!("unknown command `{other}`; this server executes: {}", COMMANDS.join(", "))))
            }
        }
    }
}

/// Serves LSP on stdin/stdout until the client says `exit`.
pub async fn run_stdio() {
    let (service, socket) = LspService::new(|client| Backend { client, workspace: RwLock::new(None) });
    Server::new(tokio::io::stdin(), tokio::io::stdout(), socket).serve(service).await;
}
