//! docs/lsp-extensions.md documents exactly the commands the server advertises.

use std::collections::BTreeSet;

#[test]
fn the_documented_commands_are_the_served_commands() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/lsp-extensions.md")).unwrap();
    let documented: BTreeSet<&str> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `missions."))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let served: BTreeSet<&str> = missions_lsp::COMMANDS.iter().map(|c| c.trim_start_matches("missions.")).collect();
    assert_eq!(documented, served);
    assert!(doc.contains("## `missions/didChange`"));
}
