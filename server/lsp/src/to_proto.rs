//! Translation from the core's types to LSP shapes, and nothing else: findings become
//! diagnostics, handoffs become hover markdown. Pure functions, tested without a transport.

use std::collections::BTreeMap;
use std::path::Path;

use missions_core::mission::{Finding, FindingStatus, Handoff, Severity};
use missions_core::status::StatusSnapshot;
use serde_json::json;
use tower_lsp_server::ls_types::{
    Diagnostic, DiagnosticRelatedInformation, DiagnosticSeverity, Location, NumberOrString, Position, Range, Uri,
};

pub fn uri(path: &Path) -> Option<Uri> {
    Uri::from_file_path(path)
}

fn severity(severity: Severity) -> DiagnosticSeverity {
    match severity {
        Severity::Error => DiagnosticSeverity::ERROR,
        Severity::Warning => DiagnosticSeverity::WARNING,
        Severity::Info => DiagnosticSeverity::INFORMATION,
    }
}

/// The line of `### <assertion>` in a `contract.md`, 0-based.
fn contract_line(contract_md: &str, assertion: &str) -> Option<u32> {
    let heading = format!("### {assertion} ");
    contract_md.lines().position(|line| line.starts_with(&heading)).map(|i| i as u32)
}

/// The length of each line of `text` in UTF-16 code units, without its line break.
pub fn utf16_line_lengths(text: &str) -> Vec<u32> {
    text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line).encode_utf16().count() as u32).collect()
}

/// The range of 1-based lines `first..=last` as LSP sees it, kept inside a document whose
/// lines have `lengths`: a line past the end is the last line, and the range ends at the end
/// of its last line (never a sentinel column).
pub fn line_range(lengths: &[u32], first: u32, last: u32) -> Range {
    let count = lengths.len().max(1) as u32;
    let first = first.max(1).min(count) - 1;
    let last = last.max(1).min(count).max(first + 1) - 1;
    let end = lengths.get(last as usize).copied().unwrap_or(0);
    Range::new(Position::new(first, 0), Position::new(last, end))
}

/// The diagnostics of every open finding with a path, by workspace-relative path.
/// `line_lengths` gives the UTF-16 line lengths of a workspace file as the editor sees it
/// (its open buffer, else the file), so every range lies inside its document.
pub fn diagnostics(
    workspace: &Path,
    snapshots: &[StatusSnapshot],
    related_information: bool,
    line_lengths: &dyn Fn(&str) -> Vec<u32>,
) -> BTreeMap<String, Vec<Diagnostic>> {
    let mut by_path: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
    let mut lengths: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for snapshot in snapshots {
        let mission = &snapshot.mission.id;
        let contract_path = workspace.join(".missions").join(mission).join("contract.md");
        let contract_md = if related_information {
            std::fs::read_to_string(&contract_path).unwrap_or_default()
        } else {
            String::new()
        };
        for finding in snapshot.findings.iter().filter(|f| f.status == FindingStatus::Open) {
            let Some(path) = &finding.path else { continue };
            let lines = lengths.entry(path.clone()).or_insert_with(|| line_lengths(path));
            by_path.entry(path.clone()).or_default().push(diagnostic(
                mission,
                finding,
                &contract_path,
                &contract_md,
                related_information,
                lines,
            ));
        }
    }
    by_path
}

fn diagnostic(
    mission: &str,
    finding: &Finding,
    contract_path: &Path,
    contract_md: &str,
    related_information: bool,
    line_lengths: &[u32],
) -> Diagnostic {
    let first = finding.line.unwrap_or(1);
    let range = line_range(line_lengths, first, finding.end_line.unwrap_or(first));
    let code = finding.assertion.clone().unwrap_or_else(|| finding.id.clone());
    let message = match &finding.assertion {
        Some(assertion) if !finding.message.starts_with(assertion.as_str()) => {
            format!("{assertion}: {}", finding.message)
        }
        _ => finding.message.clone(),
    };
    let related = finding.assertion.as_ref().filter(|_| related_information).and_then(|assertion| {
        let line = contract_line(contract_md, assertion)?;
        let uri = uri(contract_path)?;
        let position = Position::new(line, 0);
        Some(vec![DiagnosticRelatedInformation {
            location: Location { uri, range: Range::new(position, position) },
            message: format!("assertion {assertion} in the mission's contract"),
        }])
    });
    Diagnostic {
        range,
        severity: Some(severity(finding.severity)),
        code: Some(NumberOrString::String(code)),
        source: Some("missions".into()),
        message,
        related_information: related,
        data: Some(json!({"missionId": mission, "findingId": finding.id})),
        ..Diagnostic::default()
    }
}

/// The hover text for the handoff of `feature` in `mission`.
pub fn hover_markdown(mission: &str, feature_title: &str, handoff: &Handoff) -> String {
    let mut out = format!("**Missions** · mission `{mission}` · feature **{}** — {feature_title}\n\n", handoff.feature);
    out.push_str(handoff.summary.trim());
    out.push('\n');
    if !handoff.completed.is_empty() {
        out.push_str("\n**Completed**\n");
        for item in &handoff.completed {
            out.push_str(&format!("- {item}\n"));
        }
    }
    if !handoff.skipped.is_empty() {
        out.push_str("\n**Skipped**\n");
        for item in &handoff.skipped {
            out.push_str(&format!("- {} — {}\n", item.item, item.reason));
        }
    }
    if !handoff.observed_commands.is_empty() || !handoff.commands.is_empty() {
        out.push_str("\n**Commands**\n");
        for command in &handoff.observed_commands {
            let exit = command.exit_code.map_or("killed".to_owned(), |c| format!("exit {c}"));
            out.push_str(&format!("- `{}` → {exit} ({} ms)\n", command.command, command.duration_ms));
        }
        for claimed in
            handoff.commands.iter().filter(|c| !handoff.observed_commands.iter().any(|o| o.command == c.command))
        {
            out.push_str(&format!("- `{}` → exit {} (claimed, never observed)\n", claimed.command, claimed.exit_code));
        }
    }
    if !handoff.issues.is_empty() {
        out.push_str("\n**Issues**\n");
        for issue in &handoff.issues {
            let place = match (&issue.path, issue.line) {
                (Some(p), Some(l)) => format!(" ({p}:{l})"),
                (Some(p), None) => format!(" ({p})"),
                _ => String::new(),
            };
            out.push_str(&format!("- {}: {}{place}\n", issue.severity, issue.description));
        }
    }
    out.push_str(&format!("\nModel: `{}`", handoff.model));
    if let Some(commit) = &handoff.commit {
        out.push_str(&format!(" · commit `{}`", &commit[..commit.len().min(10)]));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use missions_core::mission::{
        Budget, Contract, Mission, MissionState, ObservedCommand, SkippedItem, Source, SourceKind, Validator,
    };

    fn snapshot(findings: Vec<Finding>) -> StatusSnapshot {
        StatusSnapshot {
            mission: Mission {
                id: "m1".into(),
                title: "t".into(),
                source: Source { kind: SourceKind::Text, item_id: None, text: "t".into() },
                state: MissionState::Validating,
                pause_reason: None,
                detail: None,
                branch: "missions/m1".into(),
                base_commit: "0".into(),
                contract_sha256: None,
                auto_accept: false,
                current: None,
                budget: Budget::default(),
                created_at: "t".into(),
                updated_at: "t".into(),
            },
            plan: None,
            contract: Contract { sha256: None, assertions: Vec::new() },
            findings,
            active_run: None,
            interrupted: false,
        }
    }

    fn finding(id: &str, assertion: Option<&str>, path: Option<&str>, status: FindingStatus) -> Finding {
        Finding {
            id: id.into(),
            milestone: "M1".into(),
            assertion: assertion.map(str::to_owned),
            feature: None,
            validator: Validator::Command,
            severity: Severity::Error,
            path: path.map(str::to_owned),
            line: Some(7),
            end_line: Some(9),
            message: "tests fail".into(),
            evidence: String::new(),
            status,
        }
    }

    #[test]
    fn open_findings_with_a_path_become_diagnostics_linked_to_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".missions/m1")).unwrap();
        std::fs::write(
            dir.path().join(".missions/m1/contract.md"),
            "# Validation contract\n\n## M1\n\n### A1 (failing)\n",
        )
        .unwrap();
        let snapshots = vec![snapshot(vec![
            finding("finding-1", Some("A1"), Some("src/a.py"), FindingStatus::Open),
            finding("finding-2", None, Some("src/a.py"), FindingStatus::Open),
            finding("finding-3", None, None, FindingStatus::Open),
            finding("finding-4", None, Some("src/b.py"), FindingStatus::Fixed),
        ])];
        let by_path = diagnostics(dir.path(), &snapshots, true, &|_| vec![10; 100]);
        assert_eq!(by_path.keys().collect::<Vec<_>>(), ["src/a.py"]);
        let first = &by_path["src/a.py"][0];
        assert_eq!(first.code, Some(NumberOrString::String("A1".into())));
        assert_eq!(first.source.as_deref(), Some("missions"));
        assert_eq!(first.message, "A1: tests fail");
        assert_eq!(first.severity, Some(DiagnosticSeverity::ERROR));
        assert_eq!((first.range.start.line, first.range.end.line), (6, 8));
        assert_eq!(first.data, Some(json!({"missionId": "m1", "findingId": "finding-1"})));
        let related = first.related_information.as_ref().unwrap();
        assert_eq!(related[0].location.range.start.line, 4);
        let second = &by_path["src/a.py"][1];
        assert_eq!(second.code, Some(NumberOrString::String("finding-2".into())));
        assert!(second.related_information.is_none());
        // Without client support there is no related information.
        assert!(
            diagnostics(dir.path(), &snapshots, false, &|_| vec![10; 100])["src/a.py"][0].related_information.is_none()
        );
    }

    #[test]
    fn hovers_tell_the_handoff() {
        let handoff = Handoff {
            feature: "F1".into(),
            model: "claude-sonnet-4-5".into(),
            summary: "Added slugify.".into(),
            completed: vec!["slugify()".into()],
            skipped: vec![SkippedItem { item: "docs".into(), reason: "out of scope".into() }],
            commands: vec![],
            issues: vec![],
            procedures_followed: true,
            procedure_notes: String::new(),
            files_changed: vec![],
            commit: Some("0123456789abcdef".into()),
            observed_commands: vec![ObservedCommand {
                command: "pytest -q".into(),
                exit_code: Some(0),
                duration_ms: 812,
            }],
        };
        let text = hover_markdown("m1", "slugify function", &handoff);
        for expected in [
            "feature **F1** — slugify function",
            "Added slugify.",
            "- slugify()",
            "- docs — out of scope",
            "`pytest -q` → exit 0",
            "`claude-sonnet-4-5`",
            "`0123456789`",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
        }
    }

    #[test]
    fn every_range_lies_inside_its_document() {
        let lengths = utf16_line_lengths("fn a() {}\r\n    é🎉\nlast");
        assert_eq!(lengths, vec![9, 7, 4]);
        assert_eq!(line_range(&lengths, 2, 2), Range::new(Position::new(1, 0), Position::new(1, 7)));
        // Past the end: the last line. Line 0 and an end before the start: the first line.
        assert_eq!(line_range(&lengths, 9, 12), Range::new(Position::new(2, 0), Position::new(2, 4)));
        assert_eq!(line_range(&lengths, 0, 0), Range::new(Position::new(0, 0), Position::new(0, 9)));
        assert_eq!(line_range(&lengths, 3, 1), Range::new(Position::new(2, 0), Position::new(2, 4)));
        // A missing file: an empty document.
        assert_eq!(line_range(&[], 5, 6), Range::new(Position::new(0, 0), Position::new(0, 0)));
    }
}
