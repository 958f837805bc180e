//! Tidy tests: the repository's own conventions, checked by reading its sources, so they hold
//! without anyone remembering them. Every source file opens with a module doc; every code name
//! ARCHITECTURE.md mentions still exists; the language server's advertised command list is
//! exactly what its dispatcher handles; every tool offered to a model is specified in SPEC §5.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("target") {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&root().join("server"), &mut files);
    rust_files(&root().join("tests"), &mut files);
    files.sort();
    files.into_iter().map(|path| (path.clone(), std::fs::read_to_string(&path).unwrap())).collect()
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!")))
        .map(|(path, _)| path.strip_prefix(root()).unwrap_or(&path).display().to_string())
        .collect();
    assert!(missing.is_empty(), "these files do not open with a `//!` doc saying what they are for: {missing:?}");
}

/// Whether `name` occurs in `text` as a whole identifier.
fn has_identifier(text: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

#[test]
fn every_code_name_in_the_architecture_still_exists() {
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let code: String = sources().into_iter().map(|(_, text)| text).collect::<Vec<_>>().join("\n");
    // Backticked paths like `store::follow::LogFollower` or `Mission::control`, and CamelCase
    // or snake_case names with an underscore; plain words (`running`) and files are skipped.
    let mut names = BTreeSet::new();
    for quoted in architecture.split('`').skip(1).step_by(2) {
        let segments: Vec<&str> = quoted.split("::").collect();
        if !segments.iter().all(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')) {
            continue;
        }
        let last = segments[segments.len() - 1];
        let camel = last.chars().next().is_some_and(char::is_uppercase) && last.chars().any(char::is_lowercase);
        if segments.len() > 1 || camel || last.contains('_') {
            names.insert(last.to_owned());
        }
    }
    assert!(names.len() > 40, "the architecture names too few things to check: {names:?}");
    let gone: Vec<&String> = names.iter().filter(|name| !has_identifier(&code, name)).collect();
    assert!(gone.is_empty(), "ARCHITECTURE.md names what the code no longer has: {gone:?}");
}

#[test]
fn the_servers_command_list_is_what_its_dispatcher_handles() {
    let dispatcher = std::fs::read_to_string(root().join("server/lsp/src/commands.rs")).unwrap();
    let handled: BTreeSet<&str> = dispatcher
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split_once("\" =>").map(|(name, _)| name))
        .filter(|name| name.starts_with("missions."))
        .collect();
    let advertised: BTreeSet<&str> = missions_lsp::COMMANDS.iter().copied().collect();
    assert_eq!(handled, advertised);
}

#[test]
fn every_tool_offered_to_a_model_is_in_the_spec() {
    let spec = std::fs::read_to_string(root().join("../shared/SPEC.md")).unwrap();
    let tools_section = spec.split("## 5.").nth(1).and_then(|s| s.split("\n## 6.").next()).unwrap();
    let mut offered: BTreeSet<String> =
        missions_tools::ToolSet::ALL.iter().flat_map(|set| set.names().iter().map(|name| (*name).to_owned())).collect();
    // The terminal tools are the engine's: each `spec()` names its tool.
    let terminals = std::fs::read_to_string(root().join("server/engine/src/terminals.rs")).unwrap();
    let terminal_names: Vec<String> = terminals
        .split("name: \"")
        .skip(1)
        .filter_map(|rest| rest.split_once("\".into()").map(|(name, _)| name.to_owned()))
        .collect();
    assert!(terminal_names.len() >= 4, "terminal tools not found: {terminal_names:?}");
    offered.extend(terminal_names);
    let unspecified: Vec<&String> = offered
        .iter()
        .filter(|name| !tools_section.contains(&format!("`{name} {{")) && !tools_section.contains(&format!("`{name}`")))
        .collect();
    assert!(unspecified.is_empty(), "tools offered to models without a specification in SPEC §5: {unspecified:?}");
}

/// The modules of one crate that `file` refers to as `crate::<module>`, outside its tests.
fn crate_references(text: &str) -> BTreeSet<String> {
    // Doc links are not dependencies: comments are left out with the tests.
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.as_str();
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `missions_core::…` and the like
        }
        let rest = &code[at + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    // `use crate::{a, b::c}` lists several.
    for block in code.split("use crate::{").skip(1) {
        let list = block.split('}').next().unwrap_or_default();
        for item in list.split(',') {
            let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let mut cycles = Vec::new();
    for krate in ["core", "providers", "tools", "engine", "lsp", "cli"] {
        let src = root().join("server").join(krate).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        // A module is a top-level file or directory of `src`; the crate root is not a module.
        let module_of = |path: &Path| -> Option<String> {
            let relative = path.strip_prefix(&src).ok()?;
            let first = relative.components().next()?.as_os_str().to_string_lossy().into_owned();
            let name = first.trim_end_matches(".rs").to_owned();
            (!matches!(name.as_str(), "lib" | "main")).then_some(name)
        };
        let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
        for path in &files {
            // Unit tests kept in files of their own may use anything.
            if path.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let Some(module) = module_of(path) else { continue };
            let text = std::fs::read_to_string(path).unwrap();
            for target in crate_references(&text) {
                let is_module = src.join(format!("{target}.rs")).exists() || src.join(&target).is_dir();
                if is_module && target != module {
                    edges.insert((module.clone(), target));
                }
            }
        }
        for (from, to) in &edges {
            if from < to && edges.contains(&(to.clone(), from.clone())) {
                cycles.push(format!("{krate}: {from} <-> {to}"));
            }
        }
    }
    assert!(cycles.is_empty(), "modules that import each other (one should depend on the other only): {cycles:?}");
}
