//! Starting and controlling missions for the editor: `missions.start` and every command that
//! changes a mission go through here, whether the user ran them or answered a gate. A mission
//! this server drives runs on a thread of its own (the engine does blocking git and file
//! work) and reports through one channel, which [`crate::driver`] forwards to the client.

use std::sync::Arc;

use missions_core::config::{LoadedConfig, ProcessEnvironment};
use missions_core::sync::lock;
use missions_engine::backlog::{self, StartFrom};
use missions_engine::mission::{Command, Control, EngineError, Mission, Models, Options, Outcome, Progress};
use missions_providers::ProviderRegistry;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;
use tower_lsp_server::jsonrpc::Result;

use crate::{State, internal, invalid_params};

/// What a driver reports.
pub(crate) enum DriverEvent {
    Progress(Progress),
    /// A mission this server drives recorded an event.
    Appended,
    Finished {
        mission: String,
        outcome: std::result::Result<Outcome, String>,
    },
}

pub(crate) type Events = UnboundedSender<DriverEvent>;

/// The engine's progress callback for missions this server drives.
fn progress_callback(state: &Arc<State>) -> Arc<dyn Fn(&Progress) + Send + Sync> {
    let events = state.events.clone();
    Arc::new(move |progress: &Progress| {
        let _ = events.send(DriverEvent::Progress(progress.clone()));
    })
}

/// Drives `mission` on a thread of its own until it stops; the result comes back as an event.
fn spawn(state: Arc<State>, mut mission: Mission) {
    let id = mission.id().to_owned();
    if let Ok(workspace) = state.workspace() {
        lock(&state.driving).insert(id.clone(), workspace);
    }
    let events = state.events.clone();
    let name = format!("mission-{id}");
    let started = std::thread::Builder::new().name(name).spawn(move || {
        let outcome = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(mission.drive()).map_err(|e| e.to_string()),
            Err(error) => Err(format!("cannot start a runtime for the mission: {error}")),
        };
        // Release the mission's locks before anyone is asked anything.
        drop(mission);
        let _ = events.send(DriverEvent::Finished { mission: id, outcome });
    });
    if let Err(error) = started {
        tracing::error!("cannot start a thread for a mission: {error}");
    }
}

fn engine_error(error: EngineError) -> tower_lsp_server::jsonrpc::Error {
    if error.is_usage() { invalid_params(error.to_string()) } else { internal(error.to_string()) }
}

/// Engine options for missions this server drives.
fn options(state: &Arc<State>, loaded: &LoadedConfig) -> Options {
    let events = state.events.clone();
    // The record itself is read from the log by the server's views, like any other process's.
    let appended = move |_: &str, _: &missions_core::store::Record| {
        let _ = events.send(DriverEvent::Appended);
    };
    Options {
        appended: Some(Arc::new(appended)),
        ..Options::for_config(loaded, progress_callback(state), Some(state.documents.clone()))
    }
}

fn models(state: &State, loaded: &LoadedConfig) -> Result<Models> {
    let workspace = state.workspace()?;
    ProviderRegistry::from_config(loaded, &workspace, &ProcessEnvironment)
        .map(|registry| registry.models())
        .map_err(|e| invalid_params(e.to_string()))
}

/// Starts a mission from `from` and drives it; returns its id.
pub(crate) async fn start(state: &Arc<State>, from: StartFrom) -> Result<Value> {
    let workspace = state.workspace()?;
    let loaded = state.config()?;
    let source =
        backlog::source(&workspace, &loaded.config.backlog, from).map_err(|e| invalid_params(e.to_string()))?;
    let models = models(state, &loaded)?;
    let options = options(state, &loaded);
    let mission =
        tokio::task::spawn_blocking(move || Mission::start(&workspace, loaded, models, source, false, options))
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(engine_error)?;
    let id = mission.id().to_owned();
    spawn(state.clone(), mission);
    Ok(json!({"missionId": id}))
}

/// Applies `command` to mission `id`, through its inbox when some process drives it, and
/// starts a driver when the command moves the mission on ([`Command::drives_on`]).
pub(crate) async fn control(state: &Arc<State>, id: String, command: Command) -> Result<Value> {
    let workspace = state.workspace()?;
    let loaded = state.config()?;
    let drive = command.drives_on();
    let models = if drive { models(state, &loaded)? } else { Models::default() };
    let options = options(state, &loaded);
    let for_driver = tokio::task::spawn_blocking({
        let id = id.clone();
        move || -> Result<Option<Box<Mission>>> {
            let controlled = Mission::control(&workspace, &id, loaded, models, options, vec![command]);
            match controlled.map_err(engine_error)? {
                Control::Queued { verdicts, .. } => match verdicts.into_iter().next().flatten() {
                    Some(Err(reason)) => Err(invalid_params(reason)),
                    Some(Ok(())) | None => Ok(None),
                },
                Control::Opened { mission, applied, .. } => {
                    applied.map_err(engine_error)?;
                    Ok(drive.then_some(mission))
                }
            }
        }
    })
    .await
    .map_err(|e| internal(e.to_string()))??;
    if let Some(mission) = for_driver {
        spawn(state.clone(), *mission);
    }
    state.refresh(Some(&id)).await;
    Ok(json!({}))
}
