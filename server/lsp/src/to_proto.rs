//! Translation from the server's views of the missions to LSP shapes, and nothing else:
//! findings become diagnostics, handoffs hovers, gates code actions and lenses. Pure functions
//! over in-memory views (no file is read here), tested without a transport.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use missions_core::layout;
use missions_core::mission::{Finding, FindingStatus, Handoff, MissionState, Severity, WorkStatus};
use missions_core::status::StatusSnapshot;
use serde_json::{Value, json};
use tower_lsp_server::ls_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CodeLens, Command, Diagnostic, DiagnosticRelatedInformation,
    DiagnosticSeverity, Hover, HoverContents, Location, MarkupContent, MarkupKind, NumberOrString, Position, Range,
    Uri,
};

use crate::DiagnosticData;
use crate::documents::TrackedRange;
use crate::views::MissionView;

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

/// The open findings with a path of every mission, by workspace-relative path, each beside
/// its mission's view.
pub fn open_findings_by_path(views: &[Arc<MissionView>]) -> BTreeMap<&str, Vec<(&MissionView, &Finding)>> {
    let mut by_path: BTreeMap<&str, Vec<(&MissionView, &Finding)>> = BTreeMap::new();
    for view in views {
        for finding in view.findings.iter().filter(|f| f.status == FindingStatus::Open) {
            if let Some(path) = &finding.path {
                by_path.entry(path.as_str()).or_default().push((view.as_ref(), finding));
            }
        }
    }
    by_path
}

/// The diagnostics of one file's open findings. `line_lengths` are the UTF-16 line lengths of
/// the file as the editor sees it (its open buffer, else the file), so every range lies inside
/// its document; `related_information` links each assertion's finding to its `contract.md`.
pub fn diagnostics(
    workspace: &Path,
    findings: &[(&MissionView, &Finding)],
    related_information: bool,
    line_lengths: &[u32],
) -> Vec<Diagnostic> {
    findings
        .iter()
        .map(|(view, finding)| {
            let related = finding.assertion.as_ref().filter(|_| related_information).and_then(|assertion| {
                let line = *view.contract_lines.get(assertion)?;
                let uri = uri(&layout::mission_file(workspace, view.id(), "contract.md"))?;
                let position = Position::new(line, 0);
                Some(vec![DiagnosticRelatedInformation {
                    location: Location { uri, range: Range::new(position, position) },
                    message: format!("assertion {assertion} in the mission's contract"),
                }])
            });
            diagnostic(view.id(), finding, related, line_lengths)
        })
        .collect()
}

fn diagnostic(
    mission: &str,
    finding: &Finding,
    related_information: Option<Vec<DiagnosticRelatedInformation>>,
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
    let data = DiagnosticData { mission_id: mission.to_owned(), finding_id: finding.id.clone() };
    Diagnostic {
        range,
        severity: Some(severity(finding.severity)),
        code: Some(NumberOrString::String(code)),
        source: Some(SOURCE.into()),
        message,
        related_information,
        data: serde_json::to_value(data).ok(),
        ..Diagnostic::default()
    }
}

/// The `source` of every diagnostic this server publishes.
pub const SOURCE: &str = "missions";

fn command(title: &str, name: &str, argument: Value) -> Command {
    Command { title: title.to_owned(), command: name.to_owned(), arguments: Some(vec![argument]) }
}

/// The milestone of a mission that waits for acceptance: `(id, title)`.
pub fn waiting_milestone(snapshot: &StatusSnapshot) -> Option<(&str, &str)> {
    if snapshot.mission.state != MissionState::AwaitingAcceptance {
        return None;
    }
    let milestone = snapshot.plan.as_ref()?.milestones.iter().find(|m| m.status == WorkStatus::Validated)?;
    Some((&milestone.id, &milestone.title))
}

/// The hover over a line: the handoffs of the features whose `ranges` cover it (later
/// features first), over the range of the latest one.
pub fn hover(views: &[Arc<MissionView>], ranges: &[TrackedRange], line_lengths: &[u32]) -> Option<Hover> {
    let parts: Vec<String> = ranges
        .iter()
        .filter_map(|range| {
            let view = views.iter().find(|v| v.id() == range.mission)?;
            let handoff = view.handoffs.get(&range.feature)?;
            let title = view.feature_titles.get(&range.feature).map(String::as_str).unwrap_or_default();
            Some(hover_markdown(&range.mission, title, handoff))
        })
        .collect();
    let first = ranges.first().filter(|_| !parts.is_empty())?;
    Some(Hover {
        contents: HoverContents::Markup(MarkupContent { kind: MarkupKind::Markdown, value: parts.join("\n---\n\n") }),
        range: Some(line_range(line_lengths, first.first, first.last)),
    })
}

/// The code actions offered anywhere: fixing and dismissing the Missions diagnostics the
/// client sent, and every gate's way on — so a dismissed prompt is never the only way on
/// (SPEC §8): approving and opening a waiting plan, resuming a paused or interrupted mission,
/// accepting or rejecting a waiting milestone.
pub fn code_actions(diagnostics: &[Diagnostic], views: &[Arc<MissionView>]) -> Vec<CodeActionOrCommand> {
    let mut actions = Vec::new();
    for diagnostic in diagnostics.iter().filter(|d| d.source.as_deref() == Some(SOURCE)) {
        let Some(data) = crate::from_proto::diagnostic_data(diagnostic) else { continue };
        let argument = json!({"missionId": data.mission_id, "findingId": data.finding_id});
        for (title, name) in [
            ("Missions: fix this finding", "missions.fixFinding"),
            ("Missions: dismiss finding", "missions.dismissFinding"),
        ] {
            actions.push(CodeActionOrCommand::CodeAction(CodeAction {
                title: title.into(),
                kind: Some(CodeActionKind::QUICKFIX),
                diagnostics: Some(vec![diagnostic.clone()]),
                command: Some(command(title, name, argument.clone())),
                ..CodeAction::default()
            }));
        }
    }
    for view in views {
        let snapshot = &view.snapshot;
        let id = view.id();
        let argument = json!({"missionId": id});
        match snapshot.mission.state {
            MissionState::AwaitingApproval => {
                let approve = format!("Missions: approve plan {id}");
                actions.push(CodeActionOrCommand::Command(command(&approve, "missions.approvePlan", argument.clone())));
                actions.push(CodeActionOrCommand::Command(command(
                    "Missions: open plan",
                    "missions.openPlan",
                    argument,
                )));
            }
            state if state == MissionState::Paused || snapshot.interrupted => {
                let resume = format!("Missions: resume mission {id}");
                actions.push(CodeActionOrCommand::Command(command(&resume, "missions.resume", argument)));
            }
            _ => {}
        }
    }
    for view in views {
        let Some((milestone, title)) = waiting_milestone(&view.snapshot) else { continue };
        let argument = json!({"missionId": view.id(), "milestoneId": milestone});
        let accept = format!("Missions: accept milestone {milestone} ({title})");
        let reject = format!("Missions: reject milestone {milestone}…");
        actions.push(CodeActionOrCommand::Command(command(&accept, "missions.acceptMilestone", argument.clone())));
        actions.push(CodeActionOrCommand::Command(command(&reject, "missions.rejectMilestone", argument)));
    }
    actions
}

/// The lenses of workspace-relative `path`: "approve plan" at the top of a waiting plan's
/// `plan.md` and `contract.md`, and "accept" at the top of a file a waiting milestone changed.
pub fn code_lenses(path: &str, views: &[Arc<MissionView>]) -> Vec<CodeLens> {
    let top = Range::new(Position::new(0, 0), Position::new(0, 0));
    let lens = |label: &str, name: &str, argument: Value| CodeLens {
        range: top,
        command: Some(command(label, name, argument)),
        data: None,
    };
    let mut lenses = Vec::new();
    for view in views.iter().filter(|v| v.snapshot.mission.state == MissionState::AwaitingApproval) {
        let id = view.id();
        let plan_files =
            [layout::relative_mission_file(id, "plan.md"), layout::relative_mission_file(id, "contract.md")];
        if plan_files.iter().any(|f| f == path) {
            let label = format!("Missions: approve plan {id}");
            lenses.push(lens(&label, "missions.approvePlan", json!({"missionId": id})));
        }
    }
    for view in views {
        let Some((milestone, title)) = waiting_milestone(&view.snapshot) else { continue };
        let touched = view
            .snapshot
            .plan
            .iter()
            .flat_map(|p| p.milestone(milestone))
            .flat_map(|m| m.features.iter())
            .filter_map(|f| view.handoffs.get(&f.id))
            .any(|h| h.files_changed.iter().any(|c| c.path == path));
        if touched {
            let label = format!("Missions: milestone {milestone} ({title}) waits for acceptance — accept");
            let argument = json!({"missionId": view.id(), "milestoneId": milestone});
            lenses.push(lens(&label, "missions.acceptMilestone", argument));
        }
    }
    lenses
}

/// The hover text for the handoff of `feature` in `mission`.
pub fn hover_markdown(mission: &str, feature_title: &str, handoff: &Handoff) -> String {
    let mut out = format!("**Missions** · mission `{mission}` · feature **{}** — {feature_title}\n\n", handoff.feature);
    out.push_str(handoff.claim.summary.trim());
    out.push('\n');
    if !handoff.claim.completed.is_empty() {
        out.push_str("\n**Completed**\n");
        for item in &handoff.claim.completed {
            out.push_str(&format!("- {item}\n"));
        }
    }
    if !handoff.claim.skipped.is_empty() {
        out.push_str("\n**Skipped**\n");
        for item in &handoff.claim.skipped {
            out.push_str(&format!("- {} — {}\n", item.item, item.reason));
        }
    }
    if !handoff.observed_commands.is_empty() || !handoff.claim.commands.is_empty() {
        out.push_str("\n**Commands**\n");
        for command in &handoff.observed_commands {
            let exit = missions_core::mission::exit_text(command.exit_code);
            out.push_str(&format!("- `{}` → {exit} ({} ms)\n", command.command, command.duration_ms));
        }
        for claimed in
            handoff.claim.commands.iter().filter(|c| !handoff.observed_commands.iter().any(|o| o.command == c.command))
        {
            out.push_str(&format!("- `{}` → exit {} (claimed, never observed)\n", claimed.command, claimed.exit_code));
        }
    }
    if !handoff.claim.issues.is_empty() {
        out.push_str("\n**Issues**\n");
        for issue in &handoff.claim.issues {
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
        Budget, Contract, HandoffClaim, Mission, MissionState, ObservedCommand, SkippedItem, Source, SourceKind,
        Validator,
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

    fn view(findings: Vec<Finding>) -> Arc<MissionView> {
        Arc::new(MissionView {
            snapshot: snapshot(Vec::new()),
            findings: Arc::new(findings),
            findings_revision: 0,
            handoffs: Default::default(),
            feature_titles: Default::default(),
            ranges: Default::default(),
            contract_lines: [("A1".to_owned(), 4)].into_iter().collect(),
        })
    }

    #[test]
    fn open_findings_with_a_path_become_diagnostics_linked_to_the_contract() {
        let workspace = Path::new("/work/space");
        let views = vec![view(vec![
            finding("finding-1", Some("A1"), Some("src/a.py"), FindingStatus::Open),
            finding("finding-2", None, Some("src/a.py"), FindingStatus::Open),
            finding("finding-3", None, None, FindingStatus::Open),
            finding("finding-4", None, Some("src/b.py"), FindingStatus::Fixed),
        ])];
        let by_path = open_findings_by_path(&views);
        assert_eq!(by_path.keys().collect::<Vec<_>>(), [&"src/a.py"]);
        let diagnostics_of_a = diagnostics(workspace, &by_path["src/a.py"], true, &[10; 100]);
        let first = &diagnostics_of_a[0];
        assert_eq!(first.code, Some(NumberOrString::String("A1".into())));
        assert_eq!(first.source.as_deref(), Some("missions"));
        assert_eq!(first.message, "A1: tests fail");
        assert_eq!(first.severity, Some(DiagnosticSeverity::ERROR));
        assert_eq!((first.range.start.line, first.range.end.line), (6, 8));
        assert_eq!(first.data, Some(json!({"missionId": "m1", "findingId": "finding-1"})));
        let related = first.related_information.as_ref().unwrap();
        assert_eq!(related[0].location.range.start.line, 4);
        assert!(related[0].location.uri.as_str().ends_with("/.missions/m1/contract.md"));
        let second = &diagnostics_of_a[1];
        assert_eq!(second.code, Some(NumberOrString::String("finding-2".into())));
        assert!(second.related_information.is_none());
        // Without client support there is no related information.
        assert!(diagnostics(workspace, &by_path["src/a.py"], false, &[10; 100])[0].related_information.is_none());
    }

    #[test]
    fn the_contract_line_of_an_assertion_is_found_in_the_contract_as_rendered() {
        let mut projection = missions_core::store::Projection::default();
        let mut mission = snapshot(Vec::new()).mission;
        mission.state = MissionState::Running;
        projection.mission = Some(mission);
        for id in ["A1", "A2"] {
            projection.contract.assertions.push(missions_core::mission::Assertion {
                id: id.into(),
                milestone: "M1".into(),
                description: "it holds".into(),
                check: missions_core::mission::Check::Review { rubric: "r".into() },
                status: missions_core::mission::AssertionStatus::Pending,
            });
        }
        // A1 is an acceptance test whose file quotes a line that looks like A2's heading.
        projection.contract.assertions[0].check =
            missions_core::mission::Check::Acceptance { behaviour: "b".into(), files: Vec::new(), command: None };
        let quoting = missions_core::store::AcceptanceTest {
            assertion: "A1".into(),
            command: "sh t.sh".into(),
            notes: String::new(),
            files: vec![missions_core::store::AcceptanceTestFile {
                path: "t.sh".into(),
                content: "cat <<EOF\n### A2 (pending)\n```\nEOF\n".into(),
            }],
            base_exit: Some(1),
            base_output: String::new(),
        };
        projection.acceptance_tests.insert("A1".into(), quoting);
        let view = MissionView::new(&projection, false).unwrap();
        let rendered =
            missions_core::store::render_contract_markdown(&projection.contract, Some(&projection.acceptance_tests));
        let lines: Vec<&str> = rendered.lines().collect();
        assert!(lines[view.contract_lines["A1"] as usize].starts_with("### A1 "));
        assert!(lines[view.contract_lines["A2"] as usize].starts_with("### A2 "));
        let look_alike: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("### A2 ")).collect();
        assert_eq!(look_alike.len(), 2, "{rendered}");
        assert_eq!(view.contract_lines["A2"] as usize, look_alike[1], "the heading, not the quoted line:\n{rendered}");
    }

    #[test]
    fn hovers_tell_the_handoff() {
        let handoff = Handoff {
            feature: "F1".into(),
            model: "claude-sonnet-4-5".into(),
            claim: HandoffClaim {
                summary: "Added slugify.".into(),
                completed: vec!["slugify()".into()],
                skipped: vec![SkippedItem { item: "docs".into(), reason: "out of scope".into() }],
                commands: vec![],
                issues: vec![],
                procedures_followed: true,
                procedure_notes: String::new(),
            },
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
        let lengths = crate::documents::utf16_line_lengths("fn a() {}\r\n    é🎉\nlast");
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
