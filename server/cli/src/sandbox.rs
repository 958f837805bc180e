//! `missions __sandbox`: the launcher that confines one command, then becomes it.
//!
//! It runs in a fresh process started by the engine, so confining itself confines only the
//! command. With `MISSIONS_SANDBOX_REPORT` set it prints what it could enforce (as JSON on
//! stderr) before exec'ing, which is how `missions doctor` finds out.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use missions_tools::sandbox::{Policy, enter};

pub fn exec(
    root: &Path,
    allow_network: bool,
    writable: &[PathBuf],
    hidden: &[PathBuf],
    command: &[String],
) -> ExitCode {
    let policy = Policy { root: root.to_owned(), allow_network, writable: writable.to_vec(), hidden: hidden.to_vec() };
    let report = enter(&policy);
    if std::env::var_os("MISSIONS_SANDBOX_REPORT").is_some()
        && let Ok(json) = serde_json::to_string(&report)
    {
        eprintln!("{json}");
    }
    let Some((program, args)) = command.split_first() else {
        eprintln!("missions __sandbox: no command given");
        return ExitCode::from(2);
    };
    // `exec` only returns on failure.
    let error = std::process::Command::new(program).args(args).exec();
    eprintln!("missions __sandbox: cannot run {program}: {error}");
    ExitCode::from(126)
}
