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
}

/// Which layers are in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
                for name in [".git", ".missions"] {
                    let path = policy.root.join(name);
                    if path.exists()
                        && let Err(problem) = protect(&path)
                    {
                        protected = false;
                        report.problems.push(problem);
                    }
                }
                report.protected_git = protected;
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

/// Default extra writable paths: tool caches under the home directory that builds need
/// (cargo's package lock, pip and npm caches), where they exist.
pub fn default_writable(home: Option<&Path>) -> Vec<PathBuf> {
    let Some(home) = home else { return Vec::new() };
    [".cargo", ".cache", ".npm"].iter().map(|p| home.join(p)).filter(|p| p.exists()).collect()
}
