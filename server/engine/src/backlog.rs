//! The backlog: what a mission can be started from.
//!
//! Items come from Markdown task lists (`- [ ] title`, with the indented lines under it as the
//! description) in the files `[backlog] markdown` names, and from `TODO`/`FIXME` comments in
//! the code, found with tree-sitter. An item's id is `path:line`, stable until the file is
//! edited above it.

use std::path::Path;

use missions_core::config::BacklogConfig;
use missions_core::mission::{Source, SourceKind};
use missions_tools::repo_map::{Lang, todo_comments};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub path: String,
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BacklogItem {
    pub id: String,
    /// `markdown` or `code`.
    pub source: String,
    pub title: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The mission started from this item, if any (the latest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mission: Option<ItemMission>,
}

/// The mission of a backlog item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemMission {
    pub id: String,
    pub state: missions_core::mission::MissionState,
}

/// The backlog as users see it (SPEC §6): each item with its mission, and items whose mission
/// completed left out unless `all`.
pub fn with_missions(workspace: &Path, items: Vec<BacklogItem>, all: bool) -> Vec<BacklogItem> {
    // (item id, the item's title as the mission recorded it, mission id, state): an id is
    // `path:line`, which another item can take once lines move, so the title must agree too.
    type Started = (String, String, String, missions_core::mission::MissionState);
    let missions: Vec<Started> = missions_core::status::workspace_snapshots(workspace)
        .map(|status| {
            status
                .snapshots
                .into_iter()
                .filter_map(|s| {
                    let item = s.mission.source.item_id.clone()?;
                    let title = s.mission.source.text.lines().next().unwrap_or_default().trim().to_owned();
                    Some((item, title, s.mission.id.clone(), s.mission.state))
                })
                .collect()
        })
        .unwrap_or_default();
    items
        .into_iter()
        .map(|mut item| {
            // Mission ids sort by creation: the last one is the latest.
            item.mission = missions
                .iter()
                .rfind(|(source, title, _, _)| *source == item.id && *title == item.title.trim())
                .map(|(_, _, id, state)| ItemMission { id: id.clone(), state: *state });
            item
        })
        .filter(|item| {
            all || item.mission.as_ref().is_none_or(|m| m.state != missions_core::mission::MissionState::Completed)
        })
        .collect()
}

/// Ticks the box of the Markdown task `item_id` (`path:line`) in `text`, if it is still open
/// with `title` there; returns the new text.
pub fn tick(text: &str, line: u32, title: &str) -> Option<String> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let target = lines.get_mut(index)?;
    let (indent, rest) = target.split_at(target.len() - target.trim_start().len());
    let marker = ["- [ ] ", "* [ ] ", "+ [ ] "].iter().find(|m| rest.starts_with(**m))?;
    if rest[marker.len()..].trim() != title.trim() {
        return None;
    }
    *target = format!("{indent}{}[x] {}", &marker[..2], &rest[marker.len()..]);
    Some(lines.join("\n"))
}

/// Open task-list items of one Markdown text.
pub fn markdown_items(path: &str, text: &str) -> Vec<BacklogItem> {
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        let open = ["- [ ] ", "* [ ] ", "+ [ ] "].iter().find_map(|prefix| trimmed.strip_prefix(prefix));
        let Some(title) = open.map(str::trim).filter(|t| !t.is_empty()) else {
            index += 1;
            continue;
        };
        let mut description = Vec::new();
        let mut next = index + 1;
        while next < lines.len() {
            let candidate = lines[next];
            let candidate_indent = candidate.len() - candidate.trim_start().len();
            if candidate.trim().is_empty() {
                description.push(String::new());
            } else if candidate_indent > indent && !is_task(candidate.trim_start()) {
                description.push(candidate.trim().to_owned());
            } else {
                break;
            }
            next += 1;
        }
        while description.last().is_some_and(|l| l.is_empty()) {
            description.pop();
        }
        let line_number = (index + 1) as u32;
        items.push(BacklogItem {
            id: format!("{path}:{line_number}"),
            source: "markdown".into(),
            title: title.to_owned(),
            description: description.join("\n"),
            location: Some(Location { path: path.to_owned(), line: line_number }),
            mission: None,
        });
        index = next;
    }
    items
}

fn is_task(trimmed: &str) -> bool {
    ["- [", "* [", "+ ["].iter().any(|p| trimmed.starts_with(p))
}

/// A path as text that names it exactly: bytes that are not UTF-8 (possible in Unix file
/// names) are written `\xNN` instead of being replaced, so two files never share an id.
pub fn path_text(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut text = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

/// The largest Markdown backlog file read; it comes with the repository.
const BACKLOG_FILE_LIMIT: u64 = 8 * 1024 * 1024;

/// Every open backlog item of the workspace.
pub fn list(workspace: &Path, config: &BacklogConfig) -> Vec<BacklogItem> {
    let mut items = Vec::new();
    for name in &config.markdown {
        match missions_core::store::read_bounded(&workspace.join(name), BACKLOG_FILE_LIMIT) {
            Ok(bytes) => items.extend(markdown_items(name, &String::from_utf8_lossy(&bytes))),
            Err(missions_core::store::StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!("backlog file skipped: {error}"),
        }
    }
    if config.code_comments {
        let walker = ignore::WalkBuilder::new(workspace)
            .require_git(false)
            .filter_entry(|e| e.file_name() != ".git" && e.file_name() != missions_core::layout::DIR)
            .sort_by_file_name(|a, b| a.cmp(b))
            .build();
        for entry in walker.filter_map(Result::ok).take(20_000) {
            let Some(lang) = Lang::from_path(entry.path()) else { continue };
            if entry.metadata().map(|m| m.len() > 1024 * 1024).unwrap_or(true) {
                continue;
            }
            let Ok(source) = std::fs::read_to_string(entry.path()) else { continue };
            let relative = path_text(entry.path().strip_prefix(workspace).unwrap_or(entry.path()));
            for (line, title) in todo_comments(lang, &source) {
                items.push(BacklogItem {
                    id: format!("{relative}:{line}"),
                    source: "code".into(),
                    title,
                    description: String::new(),
                    location: Some(Location { path: relative.clone(), line: line as u32 }),
                    mission: None,
                });
            }
        }
    }
    items
}

/// What a mission is started from, as a front door was asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// A backlog item, by id.
    Item(String),
    /// Text the user wrote.
    Text(String),
}

/// Why a mission cannot start from what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("no backlog item `{0}`; the backlog lists them")]
    NoItem(String),
    #[error("the mission's text is empty")]
    EmptyText,
}

/// The source of a mission started from `from`, with the backlog as configured.
pub fn source(workspace: &Path, config: &BacklogConfig, from: StartFrom) -> Result<Source, SourceError> {
    match from {
        StartFrom::Item(id) => {
            list(workspace, config).iter().find(|item| item.id == id).map(item_source).ok_or(SourceError::NoItem(id))
        }
        StartFrom::Text(text) if text.trim().is_empty() => Err(SourceError::EmptyText),
        StartFrom::Text(text) => Ok(Source { kind: SourceKind::Text, item_id: None, text }),
    }
}

/// The source of a mission started from backlog item `item`.
pub fn item_source(item: &BacklogItem) -> Source {
    Source { kind: SourceKind::Backlog, item_id: Some(item.id.clone()), text: item_text(item) }
}

/// The text a mission is started from for a backlog item.
pub fn item_text(item: &BacklogItem) -> String {
    let mut text = item.title.clone();
    if !item.description.is_empty() {
        text.push_str("\n\n");
        text.push_str(&item.description);
    }
    if let Some(location) = &item.location {
        text.push_str(&format!("\n\n(From {}:{}.)", location.path, location.line));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_task_items_with_indented_descriptions() {
        let text = "# Backlog\n\n- [ ] Add slugify\n  It should handle unicode.\n\n  And empty strings.\n- [x] Done already\n- [ ] Add a CLI\n\nNot part of it.\n";
        let items = markdown_items("BACKLOG.md", text);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id, "BACKLOG.md:3");
        assert_eq!(items[0].title, "Add slugify");
        assert_eq!(items[0].description, "It should handle unicode.\n\nAnd empty strings.");
        assert_eq!(items[1].id, "BACKLOG.md:8");
        assert_eq!(items[1].description, "");
    }

    #[test]
    fn file_names_that_are_not_utf8_keep_distinct_exact_ids() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        for name in [&b"caf\xe9.py"[..], &b"caf\xe8.py"[..]] {
            std::fs::write(dir.path().join(std::ffi::OsStr::from_bytes(name)), "# TODO: tidy\n").unwrap();
        }
        let config = BacklogConfig { markdown: Vec::new(), code_comments: true, github: None };
        let ids: Vec<String> = list(dir.path(), &config).into_iter().map(|i| i.id).collect();
        assert_eq!(ids, ["caf\\xe8.py:1", "caf\\xe9.py:1"]);
    }

    #[test]
    fn the_workspace_backlog_joins_markdown_and_code() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("TODO.md"), "- [ ] Write docs\n").unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/app.py"), "def f():\n    pass  # TODO: validate input\n").unwrap();
        let config =
            BacklogConfig { markdown: vec!["BACKLOG.md".into(), "TODO.md".into()], code_comments: true, github: None };
        let items = list(dir.path(), &config);
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["TODO.md:1", "src/app.py:2"]);
        assert_eq!(items[1].source, "code");
        assert_eq!(item_text(&items[1]), "validate input\n\n(From src/app.py:2.)");
    }

    #[test]
    fn ticking_a_box_changes_only_its_line() {
        let text = "# Backlog\n\n- [ ] Add slugify\n  details\n  * [ ] Nested\n";
        assert_eq!(
            tick(text, 3, "Add slugify").unwrap(),
            "# Backlog\n\n- [x] Add slugify\n  details\n  * [ ] Nested\n"
        );
        assert_eq!(tick(text, 5, "Nested").unwrap(), "# Backlog\n\n- [ ] Add slugify\n  details\n  * [x] Nested\n");
        assert_eq!(tick(text, 3, "Another title"), None, "a line that changed is left alone");
        assert_eq!(tick(text, 9, "Add slugify"), None);
    }
}
