//! The operating-system sandbox of the commands agents run (SPEC §2 rule 5), on Linux.
//!
//! [`enter`] confines the calling process, which then execs the command: the `missions`
//! binary re-executes itself as a launcher (`missions __sandbox …`) for this, so the engine
//! itself is never confined. Three layers, each applied where the platform allows it:
//!
//! - new mount, network and (when not root) user namespaces: `.git` and `.missions` are
//!   bind-mounted read-only, and, unless the network is allowed, the command sees only its own
//!   loopback interface (brought up, so local test servers still work);
//! - Landlock: the whole file system is readable, but writable only under the workspace,
//!   the run's private temporary directory and the configured extra paths.
//!
//! What could not be applied is reported, so the engine can say how confined commands are.

use std::path::{Path, PathBuf};

/// What the sandbox allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub root: PathBuf,
    pub allow_network: bool,
    /// Paths outside the workspace that commands may write (temporary directories, tool
    /// caches).
    pub writable: Vec<PathBuf>,
    /// Directories replaced by an empty read-only one for the command: what it must not see
    /// (a worker's commands never see `.missions/`, where the acceptance tests are).
    pub hidden: Vec<PathBuf>,
}

/// Which layers are in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub namespaces: bool,
    pub protected_git: bool,
    pub network_isolated: bool,
    pub landlock: String,
    pub problems: Vec<String>,
}

#[cfg(target_os = "linux")]
fn protect(path: &Path) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    mount(Some(path), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| format!("bind {}: {e}", path.display()))?;
    mount(None::<&str>, path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
        .map_err(|e| format!("read-only {}: {e}", path.display()))
}

/// Mounts an empty, read-only file system over `path`, so nothing under it can be read.
#[cfg(target_os = "linux")]
fn hide(path: &Path) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some("size=4k,mode=0555"))
        .map_err(|e| format!("hide {}: {e}", path.display()))
}

#[cfg(target_os = "linux")]
fn landlock(policy: &Policy) -> Result<String, String> {
    use landlock::{
        ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, path_beneath_rules,
    };
    let abi = ABI::V5;
    // Not the shared temporary directory: the engine gives each run a private one (TMPDIR)
    // among `writable`, so a workspace that itself lives under /tmp has no writable siblings.
    let mut writable: Vec<PathBuf> = vec![policy.root.clone(), PathBuf::from("/dev")];
    writable.extend(policy.writable.iter().cloned());
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(&writable, AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "enforced",
        RulesetStatus::PartiallyEnforced => "partially enforced",
        RulesetStatus::NotEnforced => "not supported by this kernel",
    }
    .to_owned())
}

/// Confines the current process to `policy`. Call it in the process that is about to exec
/// the command, never in the engine.
#[cfg(target_os = "linux")]
pub fn enter(policy: &Policy) -> Report {
    use nix::sched::{CloneFlags, unshare};
    let mut report = Report::default();
    let root_user = nix::unistd::geteuid().is_root();
    let mut flags = CloneFlags::CLONE_NEWNS;
    if !policy.allow_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if !root_user {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    match unshare(flags) {
        Ok(()) => {
            report.namespaces = true;
            report.network_isolated = !policy.allow_network;
        }
        Err(error) => report.problems.push(format!("namespaces: {error}")),
    }
    if report.namespaces {
        use nix::mount::{MsFlags, mount};
        // Mounts made here must not leak back to the host.
        match mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>) {
            Ok(()) => {
                let mut protected = true;
                for name in [".git", missions_core::layout::DIR] {
                    let path = policy.root.join(name);
                    if path.exists()
                        && let Err(problem) = protect(&path)
                    {
                        protected = false;
                        report.problems.push(problem);
                    }
                }
                report.protected_git = protected;
                for path in policy.hidden.iter().filter(|p| p.is_dir()) {
                    if let Err(problem) = hide(path) {
                        report.problems.push(problem);
                    }
                }
            }
            Err(error) => report.problems.push(format!("private mounts: {error}")),
        }
        if report.network_isolated {
            // A fresh network namespace has its loopback down; tests that talk to a local
            // server need it up. Best effort: without `ip` there is simply no network at all.
            let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status();
            if !up.is_ok_and(|s| s.success()) {
                report.problems.push("could not bring up the loopback interface".into());
            }
        }
    }
    match landlock(policy) {
        Ok(state) => report.landlock = state,
        Err(problem) => {
            report.landlock = "failed".into();
            report.problems.push(problem);
        }
    }
    report
}

/// Elsewhere there is no sandbox; the file tools' confinement still holds.
#[cfg(not(target_os = "linux"))]
pub fn enter(_policy: &Policy) -> Report {
    Report {
        landlock: "not available on this platform".into(),
        problems: vec!["no sandbox on this platform".into()],
        ..Report::default()
    }
}

/// Default extra writable paths: the tool caches under the home directory that builds need,
/// where they exist. Only cargo's caches, never all of `~/.cargo`: its `bin/` is on `PATH` and
/// its `config.toml` names programs, so writing there would reach outside the sandbox.
pub fn default_writable(home: Option<&Path>) -> Vec<PathBuf> {
    let Some(home) = home else { return Vec::new() };
    [".cargo/registry", ".cargo/git", ".cargo/.package-cache", ".cache", ".npm"]
        .iter()
        .map(|p| home.join(p))
        .filter(|p| p.exists())
        .collect()
}

impl Report {
    /// A one-line account for people: what is enforced, and what could not be.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("Landlock {}", self.landlock)];
        parts.push(if self.protected_git {
            ".git and .missions read-only".into()
        } else {
            ".git not protected".into()
        });
        parts.push(if self.network_isolated { "no network".into() } else { "network not isolated".into() });
        if !self.problems.is_empty() {
            parts.push(format!("limits here: {}", self.problems.join("; ")));
        }
        parts.join(", ")
    }
}

/// The sandbox launcher the configuration asks for: this binary's hidden `__sandbox` command,
/// writable extra paths expanded (`~` is the home directory). `None` when the sandbox is off.
pub fn launcher(mission: &missions_core::config::MissionConfig) -> Option<crate::command::Sandbox> {
    if !mission.sandbox {
        return None;
    }
    let program = std::env::current_exe().ok()?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let writable = match &mission.writable_paths {
        Some(paths) => paths
            .iter()
            .map(|p| match (p.strip_prefix("~/"), &home) {
                (Some(rest), Some(home)) => home.join(rest),
                _ => PathBuf::from(p),
            })
            .collect(),
        None => default_writable(home.as_deref()),
    };
    Some(crate::command::Sandbox {
        hidden: Vec::new(),
        program,
        args: vec!["__sandbox".into()],
        allow_network: mission.allow_network,
        writable,
    })
}

/// Runs `launcher` once with `true` under `root` and returns what it could enforce.
pub fn probe(launcher: &crate::command::Sandbox, root: &Path) -> Option<Report> {
    let mut command = std::process::Command::new(&launcher.program);
    command.args(&launcher.args).arg("--root").arg(root);
    if launcher.allow_network {
        command.arg("--allow-network");
    }
    let output = command.args(["--", "true"]).env("MISSIONS_SANDBOX_REPORT", "1").output().ok()?;
    let line = String::from_utf8_lossy(&output.stderr).lines().rev().find(|l| l.starts_with('{'))?.to_owned();
    serde_json::from_str(&line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_caches_of_the_home_directory_are_writable_by_default() {
        let home = tempfile::tempdir().unwrap();
        for dir in [".cargo/bin", ".cargo/registry", ".cargo/git", ".cache"] {
            std::fs::create_dir_all(home.path().join(dir)).unwrap();
        }
        std::fs::write(home.path().join(".cargo/config.toml"), "").unwrap();
        let writable = default_writable(Some(home.path()));
        let names: Vec<String> =
            writable.iter().map(|p| p.strip_prefix(home.path()).unwrap().display().to_string()).collect();
        assert_eq!(names, [".cargo/registry", ".cargo/git", ".cache"]);
    }
}
