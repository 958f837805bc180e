//! `missions doctor`: the effective configuration (keys only as present or missing), each
//! provider a role uses probed with one cheap request, git, and the workspace's state. Exit 0
//! when all is well, 1 when something needs fixing; every problem says what to do.

use std::path::Path;
use std::process::Command;

use missions_core::config::{Environment, LoadedConfig, ProcessEnvironment, ProviderKind};
use missions_core::mission::Role;
use missions_core::model::ProbeStatus;
use missions_core::secrets::Redactor;
use missions_providers::{PriceTable, build_provider};

use crate::Outcome;

/// Prints the report and counts what needs fixing. Every line passes through the redactor:
/// a server's error text could quote the key it was sent.
struct Report {
    problems: usize,
    redactor: Redactor,
}

impl Report {
    fn line(&self, text: impl AsRef<str>) {
        println!("{}", self.redactor.redact(text.as_ref()));
    }

    fn problem(&mut self, text: impl AsRef<str>) {
        self.problems += 1;
        self.line(format!("  ✗ {}", text.as_ref()));
    }

    fn good(&self, text: impl AsRef<str>) {
        self.line(format!("  ✓ {}", text.as_ref()));
    }
}

fn git(workspace: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git").arg("-C").arg(workspace).args(args).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

pub async fn run(workspace: &Path) -> Outcome {
    let env = ProcessEnvironment;
    let mut report = Report { problems: 0, redactor: Redactor::default() };
    report.line(format!("Missions {} doctor", env!("CARGO_PKG_VERSION")));

    report.line(format!("\nWorkspace: {}", workspace.display()));
    if !workspace.is_dir() {
        report.problem("the workspace directory does not exist; pass --workspace DIR");
    }
    match git(workspace, &["--version"]).or_else(|| {
        Command::new("git").arg("--version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }) {
        Some(version) if !version.is_empty() => report.good(version),
        _ => report.problem("git is not installed or not on PATH; Missions records every feature as a git commit"),
    }
    match git(workspace, &["rev-parse", "--show-toplevel"]) {
        Some(top) => {
            report.good(format!("git repository at {top}"));
            let branch =
                git(workspace, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap_or_else(|| "(no commits yet)".into());
            let dirty = git(workspace, &["status", "--porcelain"]).map(|s| s.lines().count()).unwrap_or(0);
            if dirty == 0 {
                report.good(format!("on branch {branch}, working tree clean"));
            } else {
                report.line(format!(
                    "  • on branch {branch}, {dirty} changed or untracked files (a mission starts only on a clean tree)"
                ));
            }
        }
        None => report.problem("not a git repository: run `git init` and commit, since missions work on a branch"),
    }
    if let Ok(locks) = missions_engine::git::Git::new(workspace).lock_files() {
        for (lock, stale) in locks {
            if stale {
                report.problem(format!(
                    "{} was left by a git process that died; the next `missions resume` removes it (or delete it)",
                    lock.display()
                ));
            } else {
                report.problem(format!(
                    "{} is held by a running git process; git commands (and missions) wait until it ends",
                    lock.display()
                ));
            }
        }
    }
    match missions_core::status::workspace_snapshots(workspace) {
        Ok(status) => {
            if status.snapshots.is_empty() && status.unreadable.is_empty() {
                report.good("no missions yet");
            }
            for snapshot in &status.snapshots {
                if snapshot.interrupted {
                    report.problem(format!(
                        "mission {} is interrupted: it is {} but no process drives it; `missions resume {}` continues it",
                        snapshot.mission.id, snapshot.mission.state, snapshot.mission.id
                    ));
                } else {
                    report.good(format!("mission {} is {}", snapshot.mission.id, snapshot.mission.state));
                }
            }
            for (id, error) in &status.unreadable {
                report.problem(format!("mission {id} cannot be read: {error}"));
            }
            for warning in status.warnings {
                report.line(format!("  • {warning}"));
            }
        }
        Err(error) => report.problem(format!("cannot read the missions in .missions/: {error}")),
    }

    report.line("\nSandbox of agents' commands:");
    let probed = LoadedConfig::load(workspace, &env, Vec::new())
        .ok()
        .and_then(|loaded| missions_tools::sandbox::launcher(&loaded.config.mission))
        .and_then(|launcher| missions_tools::sandbox::probe(&launcher, workspace));
    match probed {
        Some(sandbox) => report.line(format!("  • {}", sandbox.summary())),
        None => report.line("  • off, or could not be probed"),
    }

    report.line("\nConfiguration:");
    let loaded = match LoadedConfig::load(workspace, &env, Vec::new()) {
        Ok(loaded) => loaded,
        Err(error) => {
            report.problem(error.to_string());
            return finish(report);
        }
    };
    report.redactor = loaded.redactor(&env);
    for source in &loaded.sources {
        let state = if source.loaded { "loaded" } else { "not present" };
        report.line(format!("  • {}: {state}", source.origin));
    }
    for warning in &loaded.warnings {
        report.problem(warning);
    }

    report.line("\nRoles:");
    for role in Role::ALL {
        match loaded.route(role) {
            Ok(route) => report.line(format!("  • {role}: {}/{}", route.provider, route.model)),
            Err(error) => report.problem(error.to_string()),
        }
    }

    report.line(format!("\nProviders (prices as of {}):", PriceTable::with_overrides(&loaded.config.prices).as_of));
    let in_use = loaded.providers_in_use();
    let prices = std::sync::Arc::new(PriceTable::with_overrides(&loaded.config.prices));
    for (name, provider) in &loaded.config.providers {
        let kind = provider.kind.map(|k| k.to_string()).unwrap_or_else(|| "?".into());
        let place = match provider.kind {
            Some(ProviderKind::Replay) => {
                provider.transcript.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            }
            _ => provider.base_url.clone().unwrap_or_default(),
        };
        let key = match &provider.api_key_env {
            Some(var) if env.var(var).is_some_and(|v| !v.trim().is_empty()) => {
                format!("key {var}: present")
            }
            Some(var) => format!("key {var}: missing"),
            None => "no key configured".to_owned(),
        };
        report.line(format!("  {name} ({kind}, {place}; {key})"));
        if !in_use.contains(name) {
            report.line("    • not used by any role; not checked");
            continue;
        }
        match build_provider(name, provider, prices.clone(), workspace, &env, &report.redactor) {
            Err(error) => report.problem(error.to_string()),
            Ok(built) => {
                let probe = built.probe().await;
                match probe.status {
                    ProbeStatus::Ok => report.good(format!("  reachable: {}", probe.detail)),
                    ProbeStatus::Rejected => report.problem(format!("  reachable but refused: {}", probe.detail)),
                    ProbeStatus::Unreachable => report.problem(format!("  unreachable: {}", probe.detail)),
                }
            }
        }
    }
    finish(report)
}

fn finish(report: Report) -> Outcome {
    if report.problems == 0 {
        println!("\nAll good.");
        Outcome::Success
    } else {
        println!("\n{} thing{} to fix.", report.problems, if report.problems == 1 { "" } else { "s" });
        Outcome::Failure
    }
}
