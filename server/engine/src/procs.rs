//! What other processes are doing, read from `/proc` (Linux): whether any process holds a
//! file open, and whether a git process works in a repository. Used to prove a lock file
//! stale before removing it; where `/proc` cannot be read nothing is ever proved stale.

use std::path::Path;

/// Whether `lock` is provably abandoned: `/proc` is readable, no process has the file open,
/// and no `git` process has its working directory in `root` or names `root` or `git_dir` on
/// its command line.
pub fn nobody_holds(lock: &Path, root: &Path, git_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    let lock = lock.canonicalize().unwrap_or_else(|_| lock.to_owned());
    let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    let git_dir = git_dir.canonicalize().unwrap_or_else(|_| git_dir.to_owned());
    let mut saw_a_process = false;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        saw_a_process = true;
        let proc_dir = Path::new("/proc").join(pid);
        if let Ok(fds) = std::fs::read_dir(proc_dir.join("fd"))
            && fds.filter_map(Result::ok).any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == lock))
        {
            return false;
        }
        let Ok(comm) = std::fs::read_to_string(proc_dir.join("comm")) else {
            // A process that cannot be looked at (gone meanwhile, or another user's) could be
            // a git at work: nothing is proved.
            if proc_dir.exists() {
                return false;
            }
            continue;
        };
        if comm.trim() != "git" {
            continue;
        }
        let (Ok(cwd), Ok(cmdline)) =
            (std::fs::read_link(proc_dir.join("cwd")), std::fs::read(proc_dir.join("cmdline")))
        else {
            // Gone meanwhile, or a zombie: it holds nothing. Alive but unreadable: nothing
            // is proved.
            if proc_dir.exists() && !is_zombie(&proc_dir) {
                return false;
            }
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        // Long-lived helpers that never take these locks.
        if ["fsmonitor--daemon", "cat-file", "credential-cache--daemon"].iter().any(|d| cmdline.contains(d)) {
            continue;
        }
        let environ = std::fs::read(proc_dir.join("environ")).unwrap_or_default();
        let names_git_dir = String::from_utf8_lossy(&environ).split('\0').any(|var| {
            var.strip_prefix("GIT_DIR=").is_some_and(|dir| Path::new(dir) == git_dir || cwd.join(dir) == git_dir)
        });
        let names_repository = cmdline.split('\0').any(|arg| {
            let arg = arg.strip_prefix("--git-dir=").unwrap_or(arg);
            let arg = cwd.join(arg);
            arg == root || arg == git_dir || arg.starts_with(&git_dir)
        });
        if cwd.starts_with(&root) || names_repository || names_git_dir {
            return false;
        }
    }
    // An empty /proc (a restricted mount) proves nothing.
    saw_a_process
}

/// Whether the process of `/proc/<pid>` has exited and waits to be reaped.
fn is_zombie(proc_dir: &Path) -> bool {
    std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_someone_holds_open_is_not_stale_and_an_orphaned_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path().join(".git");
        std::fs::create_dir_all(&git_dir).unwrap();
        let lock = git_dir.join("index.lock");
        let held = std::fs::File::create(&lock).unwrap();
        assert!(!nobody_holds(&lock, dir.path(), &git_dir), "this process holds it open");
        drop(held);
        // The proof is conservative: a process caught starting or exiting while `/proc` is read
        // (other tests run git meanwhile) proves nothing, so a free lock is proved stale once
        // `/proc` is read without such a race, which a few tries give.
        let proved = (0..20).any(|_| nobody_holds(&lock, dir.path(), &git_dir));
        assert!(proved, "left by a process that is gone");
    }
}
