//! Benchmark: the `search` tool against ripgrep itself, on the same tree and pattern.
//!
//! The tree is the cargo registry's source directory (hundreds of crates, about 15,000 files),
//! or the directory given as the first argument. Both sides walk honouring ignore files, skip
//! binary files and report every match with its line number; ripgrep's output goes to
//! /dev/null, ours is collected and sorted (as the tool does). Best of five warm runs each.
//! Goal (issue #3): at most 1.3 × ripgrep's time. Needs `rg` on PATH (Debian: ripgrep).
//! Run with `cargo bench -p missions-tools --bench search [-- DIR]`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use missions_tools::Confinement;
use missions_tools::search::search_matches;

fn best_of(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut count = 0;
    for _ in 0..runs {
        let started = Instant::now();
        count = f();
        best = best.min(started.elapsed());
    }
    (best, count)
}

fn main() {
    let tree = std::env::args().skip(1).find(|a| !a.starts_with('-')).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var("HOME").expect("HOME");
        let registry = PathBuf::from(home).join(".cargo/registry/src");
        std::fs::read_dir(&registry)
            .expect("the cargo registry")
            .filter_map(Result::ok)
            .next()
            .expect("a registry")
            .path()
    });
    let confinement = Confinement::new(&tree).expect("the tree");
    for pattern in [r"fn\s+new\(", r"unsafe\s+impl", r"TODO|FIXME"] {
        let (ours, matches) = best_of(5, || {
            search_matches(&confinement, confinement.root(), pattern, None, usize::MAX).expect("search").0.len()
        });
        let rg = best_of(5, || {
            let status = Command::new("rg")
                .args(["-n", "--no-heading", "--color", "never", "-e", pattern])
                .arg(&tree)
                .stdout(Stdio::null())
                .status();
            match status {
                Ok(_) => 0,
                Err(_) => usize::MAX,
            }
        });
        if rg.1 == usize::MAX {
            println!(
                "search `{pattern}`: {matches} matches in {:.1} ms (rg not found: no comparison)",
                ours.as_secs_f64() * 1e3
            );
            continue;
        }
        let lines = Command::new("rg")
            .args(["-n", "--no-heading", "--color", "never", "-c", "-e", pattern])
            .arg(&tree)
            .output()
            .expect("rg");
        let rg_matches: usize = String::from_utf8_lossy(&lines.stdout)
            .lines()
            .filter_map(|l| l.rsplit(':').next()?.parse::<usize>().ok())
            .sum();
        println!(
            "search `{pattern}` in {}: ours {:.1} ms ({matches} matching lines), rg {:.1} ms ({rg_matches}) = {:.2}× ripgrep; goal ≤ 1.3×",
            tree.display(),
            ours.as_secs_f64() * 1e3,
            rg.0.as_secs_f64() * 1e3,
            ours.as_secs_f64() / rg.0.as_secs_f64()
        );
    }
}
