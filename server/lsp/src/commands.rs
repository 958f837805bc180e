//! The `missions.*` commands of SPEC §8: arguments in camelCase, one JSON object; results
//! `{}` or `{missionId}` or a status snapshot. A command for a mission some process is driving
//! goes through the mission's inbox and waits for the driver's verdict; otherwise it is applied
//! directly, and commands that move a mission on start a driver for it.

use std::sync::Arc;

use missions_core::config::{Environment, ProcessEnvironment};
use missions_core::mission::{Source, SourceKind};
use missions_core::model::Models;
use missions_core::status::{mission_snapshot, workspace_snapshots};
use missions_core::store::StoreError;
use missions_engine::backlog;
use missions_engine::mission::{Command, Control, EngineError, Limits, Mission, Options};
use missions_providers::ProviderRegistry;
use serde_json::{Map, Value, json};
use tower_lsp_server::jsonrpc::Result;

use crate::{State, driver, internal, invalid_params};

fn string(command: &str, argument: &Map<String, Value>, key: &str) -> Result<String> {
    match argument.get(key) {
        Some(Value::String(value)) if !value.trim().is_empty() => Ok(value.clone()),
        Some(Value::String(_)) => Err(invalid_params(format!("{command}: `{key}` is empty"))),
        Some(other) => Err(invalid_params(format!("{command}: `{key}` must be a string, not {other}"))),
        None => Err(invalid_params(format!("{command} needs `{key}`"))),
    }
}

fn optional_string(command: &str, argument: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match argument.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => string(command, argument, key).map(Some),
    }
}

fn engine_error(error: EngineError) -> tower_lsp_server::jsonrpc::Error {
    if error.is_usage() { invalid_params(error.to_string()) } else { internal(error.to_string()) }
}

/// Engine options for missions this server drives.
pub(crate) fn options(state: &Arc<State>, loaded: &missions_core::config::LoadedConfig) -> Options {
    Options {
        env: Arc::new(ProcessEnvironment) as Arc<dyn Environment>,
        progress: driver::progress_callback(state),
        sandbox: missions_tools::sandbox::launcher(&loaded.config.mission),
        write_guard: Some(state.documents.clone()),
        limits: Limits::default(),
    }
}

fn models(state: &State, loaded: &missions_core::config::LoadedConfig) -> Result<Models> {
    let workspace = state.workspace()?;
    ProviderRegistry::from_config(loaded, &workspace, &ProcessEnvironment)
        .map(|registry| registry.models())
        .map_err(|e| invalid_params(e.to_string()))
}

pub(crate) async fn execute(state: &Arc<State>, name: &str, argument: &Map<String, Value>) -> Result<Value> {
    let id = || string(name, argument, "missionId");
    match name {
        "missions.backlog" => {
            let loaded = state.config()?;
            let workspace = state.workspace()?;
            let items = backlog::with_missions(&workspace, backlog::list(&workspace, &loaded.config.backlog), false);
            serde_json::to_value(items).map_err(|e| internal(e.to_string()))
        }
        "missions.status" => {
            let workspace = state.workspace()?;
            let value = match optional_string(name, argument, "missionId")? {
                Some(id) => serde_json::to_value(
                    mission_snapshot(&workspace, &id)
                        .map_err(|e| match e {
                            StoreError::NotFound { .. } => invalid_params(e.to_string()),
                            other => internal(other.to_string()),
                        })?
                        .0,
                ),
                None => serde_json::to_value(
                    workspace_snapshots(&workspace).map_err(|e| internal(e.to_string()))?.snapshots,
                ),
            };
            value.map_err(|e| internal(e.to_string()))
        }
        "missions.start" => start(state, name, argument).await,
        "missions.approvePlan" => control(state, id()?, Command::Approve, true).await,
        "missions.acceptMilestone" => {
            let milestone = string(name, argument, "milestoneId")?;
            control(state, id()?, Command::Accept { milestone: Some(milestone) }, true).await
        }
        "missions.rejectMilestone" => {
            let milestone = string(name, argument, "milestoneId")?;
            let mission = id()?;
            match string(name, argument, "feedback") {
                Ok(feedback) => control(state, mission, Command::Reject { milestone, feedback }, true).await,
                // Without a plugin's input box, the feedback is written in a document (SPEC §8).
                Err(_) if crate::feedback::waiting(state, &mission, &milestone) => {
                    let path = crate::feedback::open(state, &mission, &milestone).await?;
                    Ok(json!({"feedbackDocument": path.display().to_string()}))
                }
                Err(_) => {
                    Err(invalid_params(format!("{name} needs `feedback`: what should change in milestone {milestone}")))
                }
            }
        }
        "missions.rollback" => {
            control(state, id()?, Command::Rollback { milestone: string(name, argument, "milestoneId")? }, false).await
        }
        "missions.pause" => control(state, id()?, Command::Pause { note: None }, false).await,
        "missions.resume" => control(state, id()?, Command::Resume, true).await,
        "missions.cancel" => control(state, id()?, Command::Cancel, false).await,
        "missions.fixFinding" => {
            control(state, id()?, Command::FixFinding { finding: string(name, argument, "findingId")? }, true).await
        }
        "missions.dismissFinding" => {
            let finding = string(name, argument, "findingId")?;
            let reason = optional_string(name, argument, "reason")?;
            control(state, id()?, Command::DismissFinding { finding, reason }, false).await
        }
        "missions.courseCorrect" => {
            control(state, id()?, Command::CourseCorrect { note: string(name, argument, "note")? }, false).await
        }
        "missions.openPlan" => {
            let mission = id()?;
            let workspace = state.workspace()?;
            missions_core::store::mission_dir(&workspace, &mission).map_err(|e| invalid_params(e.to_string()))?;
            crate::driver::open_plan(state, &mission).await;
            Ok(json!({}))
        }
        other => Err(invalid_params(format!(
            "unknown command `{other}`; this server executes: {}",
            crate::COMMANDS.join(", ")
        ))),
    }
}

async fn start(state: &Arc<State>, name: &str, argument: &Map<String, Value>) -> Result<Value> {
    let workspace = state.workspace()?;
    let loaded = state.config()?;
    let source = match (optional_string(name, argument, "itemId")?, optional_string(name, argument, "text")?) {
        (Some(item), None) => {
            let items = backlog::list(&workspace, &loaded.config.backlog);
            let found = items
                .iter()
                .find(|i| i.id == item)
                .ok_or_else(|| invalid_params(format!("no backlog item `{item}`")))?;
            Source { kind: SourceKind::Backlog, item_id: Some(found.id.clone()), text: backlog::item_text(found) }
        }
        (None, Some(text)) => Source { kind: SourceKind::Text, item_id: None, text },
        _ => return Err(invalid_params(format!("{name} needs exactly one of `itemId` or `text`"))),
    };
    let models = models(state, &loaded)?;
    let options = options(state, &loaded);
    let mission =
        tokio::task::spawn_blocking(move || Mission::start(&workspace, loaded, models, source, false, options))
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(engine_error)?;
    let id = mission.id().to_owned();
    driver::spawn(state.clone(), mission);
    Ok(json!({"missionId": id}))
}

/// Applies `command` to mission `id`, through its inbox when some process drives it, and
/// starts a driver when the command moves the mission on.
pub(crate) async fn control(state: &Arc<State>, id: String, command: Command, drive: bool) -> Result<Value> {
    let workspace = state.workspace()?;
    let loaded = state.config()?;
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
        driver::spawn(state.clone(), *mission);
    }
    state.refresh(Some(&id)).await;
    Ok(json!({}))
}
