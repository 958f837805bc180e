//! Translation from LSP shapes to the server's own, and nothing else: document URIs to
//! workspace-relative paths, content changes to edits, a command's argument, a diagnostic's
//! data. Pure functions, tested without a transport.

use std::path::Path;

use serde_json::{Map, Value};
use tower_lsp_server::ls_types::{Diagnostic, ExecuteCommandParams, TextDocumentContentChangeEvent, Uri};

use crate::DiagnosticData;
use crate::documents::Edit;

/// The workspace-relative path of a `file:` URI inside `workspace`, with `/` separators;
/// `None` for anything outside it.
pub fn relative_path(workspace: &Path, uri: &Uri) -> Option<String> {
    let path = uri.to_file_path()?;
    Some(path.strip_prefix(workspace).ok()?.to_string_lossy().replace('\\', "/"))
}

/// The edits of a `textDocument/didChange`, in the order the client sent them.
pub fn edits(changes: &[TextDocumentContentChangeEvent]) -> Vec<Edit<'_>> {
    changes
        .iter()
        .map(|change| Edit {
            span: change.range.map(|r| (r.start.line, r.start.character, r.end.line, r.end.character)),
            text: &change.text,
        })
        .collect()
}

/// The single JSON-object argument of a Missions command (SPEC §8); none means `{}`.
pub fn command_argument(params: &ExecuteCommandParams) -> Result<Map<String, Value>, String> {
    match params.arguments.as_slice() {
        [] => Ok(Map::new()),
        [Value::Object(map)] => Ok(map.clone()),
        _ => Err(format!("{} takes one JSON object argument", params.command)),
    }
}

/// The mission and finding a Missions diagnostic stands for; `None` when its data is not ours
/// (a client may send back diagnostics it changed).
pub fn diagnostic_data(diagnostic: &Diagnostic) -> Option<DiagnosticData> {
    serde_json::from_value(diagnostic.data.clone()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tower_lsp_server::ls_types::{Position, Range};

    #[test]
    fn uris_outside_the_workspace_have_no_path() {
        let workspace = Path::new("/work/space");
        let inside = Uri::from_file_path("/work/space/src/a.py").unwrap();
        let outside = Uri::from_file_path("/work/other/a.py").unwrap();
        assert_eq!(relative_path(workspace, &inside).as_deref(), Some("src/a.py"));
        assert_eq!(relative_path(workspace, &outside), None);
    }

    #[test]
    fn a_command_takes_one_object_or_nothing() {
        let params = |arguments: Vec<Value>| ExecuteCommandParams {
            command: "missions.pause".into(),
            arguments,
            work_done_progress_params: Default::default(),
        };
        assert!(command_argument(&params(vec![])).unwrap().is_empty());
        assert_eq!(command_argument(&params(vec![json!({"missionId": "m"})])).unwrap()["missionId"], "m");
        let refused = command_argument(&params(vec![json!("m")])).unwrap_err();
        assert_eq!(refused, "missions.pause takes one JSON object argument");
    }

    #[test]
    fn diagnostic_data_is_read_back_and_foreign_data_ignored() {
        let mut diagnostic = Diagnostic {
            range: Range::new(Position::new(0, 0), Position::new(0, 1)),
            data: Some(json!({"missionId": "m1", "findingId": "finding-2"})),
            ..Diagnostic::default()
        };
        let data = diagnostic_data(&diagnostic).unwrap();
        assert_eq!((data.mission_id.as_str(), data.finding_id.as_str()), ("m1", "finding-2"));
        diagnostic.data = Some(json!({"something": "else"}));
        assert_eq!(diagnostic_data(&diagnostic), None);
    }

    #[test]
    fn content_changes_become_edits_in_order() {
        let changes = vec![
            TextDocumentContentChangeEvent {
                range: Some(Range::new(Position::new(1, 2), Position::new(3, 4))),
                range_length: None,
                text: "x".into(),
            },
            TextDocumentContentChangeEvent { range: None, range_length: None, text: "whole".into() },
        ];
        let edits = edits(&changes);
        assert_eq!(edits[0].span, Some((1, 2, 3, 4)));
        assert_eq!(edits[0].text, "x");
        assert_eq!((edits[1].span, edits[1].text), (None, "whole"));
    }
}
