//! Rejecting a milestone without a plugin (SPEC §8): "Missions: reject milestone …" opens
//! `.missions/<id>/feedback/<milestone>.md` with a short template; saving it with text of the
//! user's own rejects the milestone with that text.

use std::path::PathBuf;
use std::sync::Arc;

use missions_core::layout;
use missions_engine::mission::Command;
use tower_lsp_server::jsonrpc::Result;
use tower_lsp_server::ls_types::MessageType;

use crate::{State, internal};

/// The template's comment; what is outside it is the feedback.
const TEMPLATE_START: &str = "<!--";
const TEMPLATE_END: &str = "-->";

/// Whether `milestone` of `mission` waits for acceptance.
pub(crate) fn waiting(state: &State, mission: &str, milestone: &str) -> bool {
    state
        .view(mission)
        .is_some_and(|view| crate::to_proto::waiting_milestone(&view.snapshot).is_some_and(|(id, _)| id == milestone))
}

/// Writes the template (unless the document exists) and asks the editor to show it.
pub(crate) async fn open(state: &State, mission: &str, milestone: &str) -> Result<PathBuf> {
    let workspace = state.workspace()?;
    let path = workspace.join(layout::feedback_document(mission, milestone));
    if !path.exists() {
        let template = format!(
            "{TEMPLATE_START} Missions: write below what should change in milestone {milestone} of mission {mission},\n\
             then save. Saving this file with text of your own rejects the milestone with it; the\n\
             orchestrator turns it into corrective work. {TEMPLATE_END}\n\n"
        );
        missions_core::store::write_atomically(&path, template.as_bytes()).map_err(|e| internal(e.to_string()))?;
    }
    let instead = format!("Write your feedback for milestone {milestone} in {} and save it", path.display());
    crate::driver::show_file(state, &path, instead).await;
    Ok(path)
}

/// The feedback a saved document holds: its text outside the template's comment.
pub fn feedback_text(document: &str) -> String {
    let mut text = document.to_owned();
    while let (Some(start), Some(end)) = (text.find(TEMPLATE_START), text.find(TEMPLATE_END)) {
        if end < start {
            break;
        }
        text.replace_range(start..end + TEMPLATE_END.len(), "");
    }
    text.trim().to_owned()
}

/// Called when the editor saved `path` (workspace-relative): a feedback document with text of
/// the user's own rejects its milestone, and is then removed.
pub(crate) async fn saved(state: &Arc<State>, path: &str) {
    let Some((mission, milestone)) = layout::parse_feedback_document(path) else { return };
    let Ok(workspace) = state.workspace() else { return };
    let full = workspace.join(path);
    let Ok(bytes) = missions_core::store::read_bounded(&full, 1024 * 1024) else { return };
    let feedback = feedback_text(&String::from_utf8_lossy(&bytes));
    if feedback.is_empty() || !waiting(state, mission, milestone) {
        return;
    }
    let command = Command::Reject { milestone: milestone.to_owned(), feedback };
    match crate::session::control(state, mission.to_owned(), command).await {
        Ok(_) => {
            let _ = std::fs::remove_file(&full);
        }
        Err(error) => state.client.show_message(MessageType::ERROR, error.message.to_string()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::feedback_text;

    #[test]
    fn the_template_is_not_feedback() {
        assert_eq!(feedback_text("<!-- write below -->\n\n"), "");
        assert_eq!(feedback_text("<!-- write below -->\n\nAlso strip leading dashes.\n"), "Also strip leading dashes.");
    }
}
