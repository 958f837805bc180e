//! The `missions.*` commands of SPEC §8: arguments in camelCase, one JSON object; results
//! `{}` or `{missionId}` or a status snapshot. This module reads the arguments and dispatches;
//! [`crate::session`] starts and controls the missions.

use std::sync::Arc;

use missions_core::status::{mission_snapshot, workspace_snapshots};
use missions_core::store::StoreError;
use missions_engine::backlog::{self, StartFrom};
use missions_engine::mission::Command;
use serde_json::{Map, Value, json};
use tower_lsp_server::jsonrpc::Result;

use crate::session::{self, control};
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
                    state.with_activity(
                        mission_snapshot(&workspace, &id)
                            .map_err(|e| match e {
                                StoreError::NotFound { .. } => invalid_params(e.to_string()),
                                other => internal(other.to_string()),
                            })?
                            .0,
                    ),
                ),
                None => serde_json::to_value(
                    workspace_snapshots(&workspace)
                        .map_err(|e| internal(e.to_string()))?
                        .snapshots
                        .into_iter()
                        .map(|snapshot| state.with_activity(snapshot))
                        .collect::<Vec<_>>(),
                ),
            };
            value.map_err(|e| internal(e.to_string()))
        }
        "missions.start" => {
            let from = match (optional_string(name, argument, "itemId")?, optional_string(name, argument, "text")?) {
                (Some(item), None) => StartFrom::Item(item),
                (None, Some(text)) => StartFrom::Text(text),
                _ => return Err(invalid_params(format!("{name} needs exactly one of `itemId` or `text`"))),
            };
            session::start(state, from).await
        }
        "missions.approvePlan" => control(state, id()?, Command::Approve).await,
        "missions.acceptMilestone" => {
            let milestone = string(name, argument, "milestoneId")?;
            control(state, id()?, Command::Accept { milestone: Some(milestone) }).await
        }
        "missions.rejectMilestone" => {
            let milestone = string(name, argument, "milestoneId")?;
            let mission = id()?;
            match string(name, argument, "feedback") {
                Ok(feedback) => control(state, mission, Command::Reject { milestone, feedback }).await,
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
            control(state, id()?, Command::Rollback { milestone: string(name, argument, "milestoneId")? }).await
        }
        "missions.pause" => control(state, id()?, Command::Pause { note: None }).await,
        "missions.resume" => control(state, id()?, Command::Resume).await,
        "missions.cancel" => control(state, id()?, Command::Cancel).await,
        "missions.fixFinding" => {
            control(state, id()?, Command::FixFinding { finding: string(name, argument, "findingId")? }).await
        }
        "missions.dismissFinding" => {
            let finding = string(name, argument, "findingId")?;
            let reason = optional_string(name, argument, "reason")?;
            control(state, id()?, Command::DismissFinding { finding, reason }).await
        }
        "missions.courseCorrect" => {
            control(state, id()?, Command::CourseCorrect { note: string(name, argument, "note")? }).await
        }
        "missions.openPlan" => {
            let mission = id()?;
            let workspace = state.workspace()?;
            missions_core::store::mission_dir(&workspace, &mission).map_err(|e| invalid_params(e.to_string()))?;
            driver::open_plan(state, &mission).await;
            Ok(json!({}))
        }
        other => Err(invalid_params(format!(
            "unknown command `{other}`; this server executes: {}",
            crate::COMMANDS.join(", ")
        ))),
    }
}
