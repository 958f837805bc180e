//! Prints how many o200k tokens stdin holds, as the repository map counts them (for
//! `scripts/bench-repo-map`, which measures the size of other tools' maps the same way).

use std::io::Read as _;

fn main() -> std::io::Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    println!("{}", missions_tools::repo_map::tokens(&text));
    Ok(())
}
