//! Where Missions keeps things in a workspace: everything under `<workspace>/.missions/` (SPEC
//! §4). This module owns those paths, so no other part spells them; a mission's own files are
//! under [`mission_dir`].

use std::path::{Path, PathBuf};

/// The name of the directory Missions keeps in a workspace.
pub const DIR: &str = ".missions";

/// How a file written aside begins its name, next to the file it will replace in the tree
/// until it is renamed into place. One a crash left behind is nobody's work: git is told to
/// ignore such names (the engine's `exclude_missions_dir`).
pub const ASIDE_PREFIX: &str = ".missions-aside-";

/// `<workspace>/.missions`.
pub fn root(workspace: &Path) -> PathBuf {
    workspace.join(DIR)
}

/// The workspace's configuration layer: `.missions/config.toml`.
pub fn config_file(workspace: &Path) -> PathBuf {
    root(workspace).join("config.toml")
}

/// The workspace's prompt overrides: `.missions/prompts/<name>.md`.
pub fn prompt_override(workspace: &Path, name: &str) -> PathBuf {
    root(workspace).join("prompts").join(format!("{name}.md"))
}

/// The process groups drivers started, so a later driver can stop what a dead one left.
pub fn processes_dir(workspace: &Path) -> PathBuf {
    root(workspace).join("processes")
}

/// The editors' lists of unsaved buffers, one `<pid>.json` per editor.
pub fn editors_dir(workspace: &Path) -> PathBuf {
    root(workspace).join("editors")
}

/// The directory of mission `id` (whether or not it exists).
pub fn mission_dir(workspace: &Path, id: &str) -> PathBuf {
    root(workspace).join(id)
}

/// A file of mission `id`: `.missions/<id>/<name>` (`plan.md`, `contract.md`, …).
pub fn mission_file(workspace: &Path, id: &str, name: &str) -> PathBuf {
    mission_dir(workspace, id).join(name)
}

/// The same file, workspace-relative with `/` separators, as editors name documents.
pub fn relative_mission_file(id: &str, name: &str) -> String {
    format!("{DIR}/{id}/{name}")
}

/// Where other processes queue commands for mission `id`'s driver.
pub fn inbox_dir(workspace: &Path, id: &str) -> PathBuf {
    mission_dir(workspace, id).join("inbox")
}

/// The transcript of one agent run of mission `id`.
pub fn transcript(workspace: &Path, id: &str, run_id: &str) -> PathBuf {
    mission_dir(workspace, id).join("transcripts").join(format!("{run_id}.jsonl"))
}

/// The feedback document of a milestone of mission `id`, workspace-relative.
pub fn feedback_document(id: &str, milestone: &str) -> String {
    relative_mission_file(id, &format!("feedback/{milestone}.md"))
}

/// The mission and milestone a workspace-relative path names when it is a feedback document.
pub fn parse_feedback_document(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(DIR)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(mission), Some("feedback"), Some(file), None) => Some((mission, file.strip_suffix(".md")?)),
        _ => None,
    }
}

/// The name of a mission's folder of acceptance tests: `.missions/<id>/acceptance/<assertion>/`.
pub const ACCEPTANCE: &str = "acceptance";

/// Mission `id`'s acceptance tests: workers never see this folder (SPEC §2 rule 9).
pub fn acceptance_dir(workspace: &Path, id: &str) -> PathBuf {
    mission_dir(workspace, id).join(ACCEPTANCE)
}

/// `path` as a relative path made only of plain names (no root, no `..`, no `.`), or `None`:
/// the only shape a file the engine places from a model's word may have.
pub fn plain_relative(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    let plain = path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    (plain && path.components().next().is_some()).then(|| path.to_owned())
}

/// Whether a workspace-relative path (with `/` separators) lies in `.missions/`.
pub fn is_inside(relative: &str) -> bool {
    relative == DIR || relative.strip_prefix(DIR).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_placed() {
        assert_eq!(plain_relative("tests/test_a.py"), Some(PathBuf::from("tests/test_a.py")));
        for bad in ["", "/etc/passwd", "../x.py", "tests/../../x.py", "./x.py"] {
            assert_eq!(plain_relative(bad), None, "{bad}");
        }
    }

    #[test]
    fn feedback_documents_are_named_and_read_back() {
        let path = feedback_document("m1", "M2");
        assert_eq!(path, ".missions/m1/feedback/M2.md");
        assert_eq!(parse_feedback_document(&path), Some(("m1", "M2")));
        assert_eq!(parse_feedback_document(".missions/m1/plan.md"), None);
        assert_eq!(parse_feedback_document(".missions/m1/feedback/M2.txt"), None);
        assert_eq!(parse_feedback_document("src/.missions/m1/feedback/M2.md"), None);
    }

    #[test]
    fn only_paths_in_the_directory_are_inside_it() {
        assert!(is_inside(".missions"));
        assert!(is_inside(".missions/m1/events.jsonl"));
        assert!(!is_inside(".missionsx/a"));
        assert!(!is_inside("src/.missions"));
    }
}
