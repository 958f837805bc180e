//! The agents' prompt templates: embedded in the binary, overridable per workspace by
//! `.missions/prompts/<name>.md`, rendered with `{{variable}}` substitution.
//!
//! Rendering is strict: a template that names a variable the engine does not supply is an
//! error naming it, so a typo in an override fails loudly instead of reaching a model as
//! literal braces.

use std::collections::BTreeMap;
use std::path::Path;

/// A prompt template the engine renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    OrchestratorPlan,
    OrchestratorBoundary,
    Worker,
    Reviewer,
    UserTester,
    TestAuthor,
}

impl Template {
    #[cfg(test)]
    pub const ALL: [Template; 6] = [
        Template::OrchestratorPlan,
        Template::OrchestratorBoundary,
        Template::Worker,
        Template::Reviewer,
        Template::UserTester,
        Template::TestAuthor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Template::OrchestratorPlan => "orchestrator-plan",
            Template::OrchestratorBoundary => "orchestrator-boundary",
            Template::Worker => "worker",
            Template::Reviewer => "reviewer",
            Template::UserTester => "user-tester",
            Template::TestAuthor => "test-author",
        }
    }

    fn embedded(self) -> &'static str {
        match self {
            Template::OrchestratorPlan => include_str!("../../../prompts/orchestrator-plan.md"),
            Template::OrchestratorBoundary => include_str!("../../../prompts/orchestrator-boundary.md"),
            Template::Worker => include_str!("../../../prompts/worker.md"),
            Template::Reviewer => include_str!("../../../prompts/reviewer.md"),
            Template::UserTester => include_str!("../../../prompts/user-tester.md"),
            Template::TestAuthor => include_str!("../../../prompts/test-author.md"),
        }
    }

    /// The variables the engine supplies for this template (checked against the embedded
    /// templates by the tests).
    #[cfg(test)]
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            Template::OrchestratorPlan => &["project_instructions", "checks", "repo_map"],
            Template::OrchestratorBoundary => {
                &["round", "max_correction_rounds", "plan", "contract", "project_instructions"]
            }
            Template::Worker => &[
                "feature",
                "assertions",
                "checks",
                "plan_excerpt",
                "earlier_handoffs",
                "course_corrections",
                "project_instructions",
                "repo_map",
            ],
            Template::Reviewer | Template::UserTester => &["project_instructions"],
            Template::TestAuthor => &["project_instructions", "repo_map"],
        }
    }

    /// The template text: the workspace's override if there is one, else the embedded one.
    pub fn source(self, workspace: &Path) -> Result<String, PromptError> {
        let path = missions_core::layout::prompt_override(workspace, self.name());
        match missions_core::store::read_bounded(&path, PROMPT_FILE_LIMIT) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(missions_core::store::StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(self.embedded().to_owned())
            }
            Err(error) => Err(PromptError::Read { path: path.display().to_string(), message: error.to_string() }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read prompt override {path}: {message}")]
    Read { path: String, message: String },
    #[error(
        "prompt template `{template}` uses `{{{{{variable}}}}}`, which the engine does not provide (it provides: {known})"
    )]
    Unresolved { template: String, variable: String, known: String },
}

/// Substitutes `{{name}}` in `text` from `values`; any other `{{…}}` is an error.
pub fn render_text(template: &str, text: &str, values: &BTreeMap<&str, String>) -> Result<String, PromptError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = after[..end].trim();
        match values.get(name) {
            Some(value) => out.push_str(value),
            None => {
                return Err(PromptError::Unresolved {
                    template: template.to_owned(),
                    variable: name.to_owned(),
                    known: values.keys().copied().collect::<Vec<_>>().join(", "),
                });
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The largest prompt override or instructions file read; they come with the repository.
const PROMPT_FILE_LIMIT: u64 = 1024 * 1024;

/// Renders `template` for `workspace` with `values`.
pub fn render(template: Template, workspace: &Path, values: &BTreeMap<&str, String>) -> Result<String, PromptError> {
    render_text(template.name(), &template.source(workspace)?, values)
}

/// The repository's own instructions for agents: `AGENTS.md`, else `CLAUDE.md`.
pub fn project_instructions(workspace: &Path) -> String {
    for name in ["AGENTS.md", "CLAUDE.md"] {
        if let Ok(bytes) = missions_core::store::read_bounded(&workspace.join(name), PROMPT_FILE_LIMIT) {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if !text.is_empty() {
                return text.to_owned();
            }
        }
    }
    "(none: the repository has no AGENTS.md or CLAUDE.md)".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_with_exactly_the_variables_the_engine_provides() {
        let dir = tempfile::tempdir().unwrap();
        for template in Template::ALL {
            let values: BTreeMap<&str, String> = template.variables().iter().map(|v| (*v, format!("<{v}>"))).collect();
            let text = render(template, dir.path(), &values).unwrap_or_else(|e| panic!("{e}"));
            assert!(!text.contains("{{"), "{} left a variable unresolved", template.name());
            for variable in template.variables() {
                assert!(text.contains(&format!("<{variable}>")), "{} never uses {variable}", template.name());
            }
        }
    }

    #[test]
    fn an_override_with_an_unknown_variable_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".missions/prompts")).unwrap();
        std::fs::write(
            dir.path().join(".missions/prompts/reviewer.md"),
            "Review {{project_instructions}} and {{diff_text}}",
        )
        .unwrap();
        let values = BTreeMap::from([("project_instructions", "x".to_owned())]);
        let error = render(Template::Reviewer, dir.path(), &values).unwrap_err();
        assert_eq!(
            error.to_string(),
            "prompt template `reviewer` uses `{{diff_text}}`, which the engine does not provide (it provides: project_instructions)"
        );
        std::fs::write(dir.path().join(".missions/prompts/reviewer.md"), "Custom: {{ project_instructions }}").unwrap();
        assert_eq!(render(Template::Reviewer, dir.path(), &values).unwrap(), "Custom: x");
    }

    #[test]
    fn project_instructions_come_from_agents_md_then_claude_md() {
        let dir = tempfile::tempdir().unwrap();
        assert!(project_instructions(dir.path()).contains("none"));
        std::fs::write(dir.path().join("CLAUDE.md"), "use tabs").unwrap();
        assert_eq!(project_instructions(dir.path()), "use tabs");
        std::fs::write(dir.path().join("AGENTS.md"), "run make test").unwrap();
        assert_eq!(project_instructions(dir.path()), "run make test");
    }
}
