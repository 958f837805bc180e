//! `repo_map`: an outline of the definitions in a repository, from tree-sitter, ranked toward
//! the run's task and cut to a token budget.
//!
//! For Rust, Python, JavaScript, TypeScript (and TSX) and Go, each file is parsed and a query
//! collects its definitions (functions, methods, types, classes, traits, interfaces); each is
//! shown by its line number and the first line of its source, indented by nesting. Files are
//! ranked by [`crate::rank`]: a personalised PageRank over the references between files,
//! tilted toward the focus text (its words, the files it names, which come first even when they
//! are not code) and away from tests, benches and examples; the map is then cut to its budget
//! as the o200k tokenizer counts tokens ([`tokens`]), never over it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::OnceLock;

use tree_sitter::{Language, Parser, Query, QueryCursor, StreamingIterator};

use crate::paths::Confinement;

/// Files larger than this are not outlined (generated or vendored code, most likely).
const MAX_FILE_BYTES: u64 = 1024 * 1024;
const MAX_FILES: usize = 20_000;
const MAX_SIGNATURE_CHARS: usize = 160;

/// A language the map understands, and its definitions query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
}

impl Lang {
    pub fn from_path(path: &Path) -> Option<Lang> {
        match path.extension()?.to_str()? {
            "rs" => Some(Lang::Rust),
            "py" | "pyi" => Some(Lang::Python),
            "js" | "mjs" | "cjs" | "jsx" => Some(Lang::JavaScript),
            "ts" | "mts" | "cts" => Some(Lang::TypeScript),
            "tsx" => Some(Lang::Tsx),
            "go" => Some(Lang::Go),
            _ => None,
        }
    }

    fn language(self) -> Language {
        match self {
            Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
            Lang::Python => tree_sitter_python::LANGUAGE.into(),
            Lang::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Lang::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Lang::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Lang::Go => tree_sitter_go::LANGUAGE.into(),
        }
    }

    /// Definitions are `@def` nodes with an `@name`. Names are matched with a wildcard so the
    /// queries do not depend on which identifier kind each grammar uses.
    fn query(self) -> &'static str {
        match self {
            Lang::Rust => {
                "(function_item name: (_) @name) @def
                 (function_signature_item name: (_) @name) @def
                 (struct_item name: (_) @name) @def
                 (enum_item name: (_) @name) @def
                 (union_item name: (_) @name) @def
                 (trait_item name: (_) @name) @def
                 (impl_item type: (_) @name) @def
                 (mod_item name: (_) @name) @def
                 (type_item name: (_) @name) @def
                 (const_item name: (_) @name) @def
                 (static_item name: (_) @name) @def
                 (macro_definition name: (_) @name) @def"
            }
            Lang::Python => {
                "(function_definition name: (_) @name) @def
                 (class_definition name: (_) @name) @def"
            }
            Lang::JavaScript => {
                "(function_declaration name: (_) @name) @def
                 (generator_function_declaration name: (_) @name) @def
                 (class_declaration name: (_) @name) @def
                 (method_definition name: (_) @name) @def
                 (lexical_declaration (variable_declarator name: (_) @name value: [(arrow_function) (function_expression)])) @def"
            }
            Lang::TypeScript | Lang::Tsx => {
                "(function_declaration name: (_) @name) @def
                 (class_declaration name: (_) @name) @def
                 (abstract_class_declaration name: (_) @name) @def
                 (method_definition name: (_) @name) @def
                 (interface_declaration name: (_) @name) @def
                 (type_alias_declaration name: (_) @name) @def
                 (enum_declaration name: (_) @name) @def
                 (lexical_declaration (variable_declarator name: (_) @name value: [(arrow_function) (function_expression)])) @def"
            }
            Lang::Go => {
                "(function_declaration name: (_) @name) @def
                 (method_declaration name: (_) @name) @def
                 (type_declaration (type_spec name: (_) @name)) @def"
            }
        }
    }
}

pub use crate::map_cache::Definition;

/// Compiling a query costs far more than running it, so each is compiled once per process.
fn compiled(cache: &'static QueryCache, lang: Lang, text: &str) -> Option<&'static Query> {
    let index = match lang {
        Lang::Rust => 0,
        Lang::Python => 1,
        Lang::JavaScript => 2,
        Lang::TypeScript => 3,
        Lang::Tsx => 4,
        Lang::Go => 5,
    };
    cache[index]
        .get_or_init(|| {
            Query::new(&lang.language(), text)
                .map_err(|error| tracing::warn!("the tree-sitter query for {lang:?} does not compile: {error}"))
                .ok()
        })
        .as_ref()
}

type QueryCache = [OnceLock<Option<Query>>; 6];
static DEFINITION_QUERIES: QueryCache = [const { OnceLock::new() }; 6];
static COMMENT_QUERIES: QueryCache = [const { OnceLock::new() }; 6];

fn parse(lang: Lang, source: &str) -> Option<tree_sitter::Tree> {
    let mut parser = Parser::new();
    parser.set_language(&lang.language()).ok()?;
    parser.parse(source, None)
}

/// The definitions of one source text, in order.
pub fn outline(lang: Lang, source: &str) -> Vec<Definition> {
    let Some(tree) = parse(lang, source) else { return Vec::new() };
    let Some(query) = compiled(&DEFINITION_QUERIES, lang, lang.query()) else { return Vec::new() };
    let (Some(def_index), Some(name_index)) =
        (query.capture_index_for_name("def"), query.capture_index_for_name("name"))
    else {
        return Vec::new();
    };
    let mut cursor = QueryCursor::new();
    let mut matches = cursor.matches(query, tree.root_node(), source.as_bytes());
    let mut found: Vec<(usize, usize, String, String)> = Vec::new();
    while let Some(m) = matches.next() {
        let def = m.captures().iter().find(|c| c.index == def_index).map(|c| c.node);
        let name = m.captures().iter().find(|c| c.index == name_index).map(|c| c.node);
        let (Some(def), Some(name)) = (def, name) else {
            continue;
        };
        let first_line = source[def.start_byte()..def.end_byte()].lines().next().unwrap_or_default().trim_end();
        let signature: String = if first_line.chars().count() > MAX_SIGNATURE_CHARS {
            format!("{}…", first_line.chars().take(MAX_SIGNATURE_CHARS).collect::<String>())
        } else {
            first_line.to_owned()
        };
        let name = source[name.start_byte()..name.end_byte()].to_owned();
        found.push((def.start_byte(), def.end_byte(), name, signature));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    found.dedup_by(|a, b| a.0 == b.0);
    let mut stack: Vec<usize> = Vec::new();
    found
        .into_iter()
        .map(|(start, end, name, signature)| {
            while stack.last().is_some_and(|enclosing_end| *enclosing_end <= start) {
                stack.pop();
            }
            let depth = stack.len();
            stack.push(end);
            let line = source[..start].matches('\n').count() + 1;
            Definition { line, depth, name, signature: signature.trim_start().to_owned() }
        })
        .collect()
}

/// Lower-case words of a text, with `camelCase` and `snake_case` split, for ranking.
fn words(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && previous_lower && !current.is_empty() {
                out.insert(std::mem::take(&mut current));
            }
            previous_lower = c.is_lowercase() || c.is_ascii_digit();
            current.extend(c.to_lowercase());
        } else {
            if !current.is_empty() {
                out.insert(std::mem::take(&mut current));
            }
            previous_lower = false;
        }
    }
    if !current.is_empty() {
        out.insert(current);
    }
    out.retain(|w| {
        w.chars().count() >= 3
            && !matches!(w.as_str(), "the" | "and" | "for" | "with" | "that" | "this" | "from" | "into" | "add" | "use")
    });
    out
}

/// The tokens `text` takes as OpenAI's o200k tokenizer counts them (the one of the models most
/// likely to read the map; others differ by a few per cent). The tokenizer loads once per
/// process; should it fail to, four characters a token is the fallback.
pub fn tokens(text: &str) -> usize {
    static TOKENIZER: OnceLock<Option<tiktoken_rs::CoreBPE>> = OnceLock::new();
    match TOKENIZER.get_or_init(|| tiktoken_rs::o200k_base().ok()) {
        Some(bpe) => bpe.encode_ordinary(text).len(),
        None => text.len().div_ceil(4),
    }
}

/// [`tokens`] of a file's block in the map, remembered for the life of the process: a file
/// that did not change renders the same block in every map of a mission, and counting is most
/// of what a map of a small repository costs. Forgotten whole when the blocks remembered pass
/// a few megabytes (a long-lived language server maps many versions of many files).
fn block_tokens(block: &str) -> usize {
    const REMEMBERED_BYTES: usize = 8 << 20;
    /// The blocks counted, and the bytes they hold.
    type Counted = (HashMap<String, usize>, usize);
    static COUNTED: OnceLock<std::sync::Mutex<Counted>> = OnceLock::new();
    let counted = COUNTED.get_or_init(Default::default);
    let known = counted.lock().ok().and_then(|counted| counted.0.get(block).copied());
    if let Some(count) = known {
        return count;
    }
    let count = tokens(block);
    if let Ok(mut counted) = counted.lock() {
        let (blocks, bytes) = &mut *counted;
        if *bytes + block.len() > REMEMBERED_BYTES {
            blocks.clear();
            *bytes = 0;
        }
        *bytes += block.len();
        blocks.insert(block.to_owned(), count);
    }
    count
}

struct FileOutline<'a> {
    path: &'a str,
    definitions: &'a [Definition],
    score: f64,
}

/// One file's definitions and the identifiers it uses.
fn study(lang: Lang, source: &str) -> crate::map_cache::Facts {
    crate::map_cache::Facts { definitions: outline(lang, source), mentions: crate::rank::mentions(source) }
}

/// What a file's cached facts are computed with: every language's query, so a changed query
/// never serves facts found with the old one. Digested once per process.
fn computed_with() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| {
        let langs = [Lang::Rust, Lang::Python, Lang::JavaScript, Lang::TypeScript, Lang::Tsx, Lang::Go];
        let queries: String = langs.iter().map(|lang| lang.query()).collect();
        missions_core::sha256_hex(queries.as_bytes())[..16].to_owned()
    })
}

/// The user's global gitignore (`core.excludesFile`, else git's default place), looked up
/// once per process: finding it means reading git's configuration files, which every walk
/// would otherwise do again. Its patterns are still read at each walk.
fn global_gitignore() -> Option<&'static Path> {
    static GLOBAL: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    GLOBAL.get_or_init(|| ignore::gitignore::gitconfig_excludes_path().filter(|path| path.is_file())).as_deref()
}

/// How many threads parse: one per core, at most eight. Looked up once, since each look
/// reads the cgroup's files.
fn parse_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8))
}

/// The workspace files that `focus` names by path (`docs/filesize.md`, `src/lib.rs`), as
/// workspace-relative paths.
fn named_files(confinement: &Confinement, focus: &str) -> std::collections::HashSet<String> {
    focus
        .split(|c: char| c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '(' | ')' | ',' | ';' | '<' | '>'))
        .map(|token| token.trim_end_matches(['.', ':', '!', '?']))
        .filter(|token| token.contains('.') || token.contains('/'))
        .filter_map(|token| confinement.resolve_read(token).ok().filter(|p| p.is_file()))
        .map(|resolved| confinement.relative(&resolved))
        .collect()
}

/// At most this many definitions of one file are shown (outer ones first), so one large file
/// never fills the map alone and the map stays broad.
const MAX_DEFINITIONS_SHOWN: usize = 24;

fn render_file(file: &FileOutline) -> String {
    let mut out = format!("{}:\n", file.path);
    // The outermost definitions first when there are too many: they say what the file is.
    let mut shown: Vec<&Definition> = file.definitions.iter().collect();
    if shown.len() > MAX_DEFINITIONS_SHOWN {
        shown.sort_by_key(|d| d.depth);
        shown.truncate(MAX_DEFINITIONS_SHOWN);
        shown.sort_by_key(|d| d.line);
    }
    for def in &shown {
        out.push_str(&format!("{:>5}│{}{}\n", def.line, "  ".repeat(def.depth), def.signature));
    }
    if shown.len() < file.definitions.len() {
        out.push_str(&format!("     │… {} more\n", file.definitions.len() - shown.len()));
    }
    out
}

/// The repository map of `path` (the whole workspace by default), ranked toward `focus` and
/// cut to `max_tokens` tokens, with what was learned of each file kept in the user's cache
/// directory ([`crate::map_cache`]).
pub fn repo_map(
    confinement: &Confinement,
    path: Option<&str>,
    focus: &str,
    max_tokens: usize,
) -> Result<String, String> {
    repo_map_cached(confinement, path, focus, max_tokens, crate::map_cache::cache_dir().as_deref())
}

/// [`repo_map`] with its cache under `cache_dir` (none with `None`).
pub fn repo_map_cached(
    confinement: &Confinement,
    path: Option<&str>,
    focus: &str,
    max_tokens: usize,
    cache_dir: Option<&Path>,
) -> Result<String, String> {
    let base = confinement.resolve_read(path.unwrap_or(".")).map_err(|e| e.0)?;
    let purpose = crate::rank::Purpose { words: words(focus), named: named_files(confinement, focus) };
    let mut walker = ignore::WalkBuilder::new(&base);
    walker
        .require_git(false)
        .git_global(false)
        .filter_entry(confinement.walk_filter())
        .sort_by_file_name(|a, b| a.cmp(b));
    if let Some(global) = global_gitignore() {
        walker.add_ignore(global);
    }
    let walker = walker.build();
    let candidates: Vec<(std::path::PathBuf, String, std::fs::Metadata, Lang)> = walker
        .filter_map(Result::ok)
        .take(MAX_FILES)
        .filter_map(|entry| {
            let lang = Lang::from_path(entry.path())?;
            let metadata = entry.metadata().ok().filter(|m| m.is_file() && m.len() <= MAX_FILE_BYTES)?;
            let relative = confinement.relative(entry.path());
            Some((entry.into_path(), relative, metadata, lang))
        })
        .collect();
    // Files are studied in parallel, a share per core (a few on this thread: starting threads
    // would cost more), and kept in walk order.
    let mut cache = crate::map_cache::MapCache::open(cache_dir, confinement.root(), computed_with());
    let study_part = |part: &[(std::path::PathBuf, String, std::fs::Metadata, Lang)]| {
        part.iter()
            .filter_map(|(path, relative, metadata, lang)| {
                let (facts, learned) = cache.facts(path, relative, metadata, |source| study(*lang, source))?;
                Some((relative.clone(), facts, learned))
            })
            .collect::<Vec<_>>()
    };
    let results: Vec<_> = if candidates.len() < 64 {
        study_part(&candidates)
    } else {
        let share = candidates.len().div_ceil(parse_threads()).max(1);
        std::thread::scope(|scope| {
            let study_part = &study_part;
            let workers: Vec<_> = candidates.chunks(share).map(|part| scope.spawn(move || study_part(part))).collect();
            // A thread that panicked leaves its share out of the map rather than failing it.
            workers.into_iter().flat_map(|worker| worker.join().unwrap_or_default()).collect()
        })
    };
    let mut studied = Vec::with_capacity(results.len());
    for (relative, facts, learned) in results {
        if let Some(learned) = learned {
            cache.record(learned);
        }
        studied.push((relative, facts));
    }
    let whole = base == confinement.root();
    cache.save(&studied.iter().map(|(relative, _)| relative.clone()).collect(), whole);
    let mut files = Vec::new();
    let mut facts = Vec::new();
    for (relative, found) in &studied {
        // A file that defines nothing still links to what it uses.
        facts.push(crate::rank::FileFacts {
            path: relative.clone(),
            defines: found.definitions.iter().map(|d| d.name.clone()).collect(),
            mentions: &found.mentions,
        });
        if !found.definitions.is_empty() {
            files.push(FileOutline { path: relative, definitions: &found.definitions, score: 0.0 });
        }
    }
    if files.is_empty() && purpose.named.is_empty() {
        return Ok("no definitions found (the map covers Rust, Python, JavaScript, TypeScript and Go)".into());
    }
    let scores: std::collections::HashMap<String, f64> = facts
        .iter()
        .map(|f| f.path.clone())
        .zip(crate::rank::rank(&facts, &purpose, |text| words(text).into_iter().collect()))
        .collect();
    for file in &mut files {
        file.score = scores.get(file.path).copied().unwrap_or_default();
    }
    // Stable: equal scores keep path order.
    files.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = String::new();
    // Files the purpose names come first, by name, whatever they hold (docs, configuration).
    let mut named: Vec<&String> =
        purpose.named.iter().filter(|p| !files.iter().any(|f| f.path == p.as_str())).collect();
    named.sort();
    for path in named {
        out.push_str(&format!("{path} (named in the task)\n"));
    }
    // Lines are added while the map, with room kept for the closing note, stays within the
    // budget as the tokenizer counts it; a map that fits whole needs no note.
    let note = |shown: usize| {
        format!(
            "({shown} of {} files shown; the rest did not fit in {max_tokens} tokens — pass a path to map a part)\n",
            files.len()
        )
    };
    let room = max_tokens.saturating_sub(block_tokens(&note(files.len())));
    let mut used = if out.is_empty() { 0 } else { tokens(&out) };
    let mut shown = 0usize;
    'files: for file in &files {
        let block = render_file(file);
        let cost = block_tokens(&block);
        if used + cost <= room || (used + cost <= max_tokens && shown + 1 == files.len()) {
            out.push_str(&block);
            used += cost;
            shown += 1;
            continue;
        }
        // As much of the next file as fits, then stop.
        for line in block.lines() {
            let line_cost = tokens(line) + 1;
            if used + line_cost > room {
                break 'files;
            }
            out.push_str(line);
            out.push('\n');
            used += line_cost;
        }
        break;
    }
    if shown < files.len() {
        out.push_str(&note(shown));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(lang: Lang, source: &str) -> Vec<(usize, usize, String)> {
        outline(lang, source).into_iter().map(|d| (d.line, d.depth, d.name)).collect()
    }

    #[test]
    fn each_language_is_outlined() {
        assert_eq!(
            names(
                Lang::Rust,
                "struct Slug;\nimpl Slug {\n    fn new() -> Self { Slug }\n}\ntrait T {}\nfn slugify(s: &str) {}\nmod m { enum E {} }\n"
            ),
            vec![
                (1, 0, "Slug".into()),
                (2, 0, "Slug".into()),
                (3, 1, "new".into()),
                (5, 0, "T".into()),
                (6, 0, "slugify".into()),
                (7, 0, "m".into()),
                (7, 1, "E".into())
            ]
        );
        assert_eq!(
            names(
                Lang::Python,
                "import re\n\nclass Slugger:\n    def run(self):\n        pass\n\ndef slugify(text):\n    return text\n"
            ),
            vec![(3, 0, "Slugger".into()), (4, 1, "run".into()), (7, 0, "slugify".into())]
        );
        assert_eq!(
            names(Lang::JavaScript, "function slugify(s) {}\nclass A { run() {} }\nconst f = (x) => x;\n"),
            vec![(1, 0, "slugify".into()), (2, 0, "A".into()), (2, 1, "run".into()), (3, 0, "f".into())]
        );
        assert_eq!(
            names(
                Lang::TypeScript,
                "interface Opts { a: string }\ntype Id = string;\nexport class Svc {\n  go(): void {}\n}\nexport function slugify(s: string): string { return s }\nenum Color { Red }\n"
            ),
            vec![
                (1, 0, "Opts".into()),
                (2, 0, "Id".into()),
                (3, 0, "Svc".into()),
                (4, 1, "go".into()),
                (6, 0, "slugify".into()),
                (7, 0, "Color".into())
            ]
        );
        assert_eq!(
            names(Lang::Tsx, "export function App(): JSX.Element { return <div/> }\n"),
            vec![(1, 0, "App".into())]
        );
        assert_eq!(
            names(
                Lang::Go,
                "package main\n\ntype Slug struct{}\n\nfunc (s Slug) Run() {}\n\nfunc Slugify(s string) string { return s }\n"
            ),
            vec![(3, 0, "Slug".into()), (5, 0, "Run".into()), (7, 0, "Slugify".into())]
        );
    }

    #[test]
    fn the_map_is_ranked_toward_the_focus_and_cut_to_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a_billing.py"), "def charge():\n    pass\n").unwrap();
        std::fs::write(
            dir.path().join("src/text_utils.py"),
            "def slugify(text):\n    pass\n\ndef titlecase(text):\n    pass\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "# not code\n").unwrap();
        let c = Confinement::new(dir.path()).unwrap();
        let map = repo_map(&c, None, "Make slugify handle unicode text", 1000).unwrap();
        assert_eq!(
            map,
            "src/text_utils.py:\n    1│def slugify(text):\n    4│def titlecase(text):\nsrc/a_billing.py:\n    1│def charge():\n"
        );
        let small = repo_map(&c, None, "slugify", 45).unwrap();
        assert!(small.starts_with("src/text_utils.py:\n    1│def slugify(text):\n"), "{small}");
        assert!(small.contains("files shown; the rest"), "{small}");
    }

    /// The files of a map, in order.
    fn files_of(map: &str) -> Vec<&str> {
        map.lines().filter(|l| !l.starts_with(' ') && !l.starts_with('(')).map(|l| l.trim_end_matches(':')).collect()
    }

    #[test]
    fn without_a_focus_the_core_comes_before_tests_benches_and_examples() {
        // A small client laid out like `requests`: what a human names as its core (sessions,
        // models) must lead the map, and support files come last.
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minireq");
        let c = Confinement::new(&fixture).unwrap();
        let map = repo_map(&c, None, "", 4096).unwrap();
        let files = files_of(&map);
        let position = |path: &str| files.iter().position(|f| *f == path).unwrap_or_else(|| panic!("{path} in\n{map}"));
        let last_core = ["minireq/sessions.py", "minireq/models.py", "minireq/adapters.py", "minireq/api.py"]
            .iter()
            .map(|p| position(p))
            .max()
            .unwrap();
        for support in ["tests/test_sessions.py", "tests/test_api.py", "benches/bench_get.py", "examples/demo.py"] {
            assert!(position(support) > last_core, "{support} before the core:\n{map}");
        }
        assert!(position("minireq/models.py") < position("minireq/exceptions.py"), "{map}");
        // A tight budget keeps the core.
        let small = files_of(&repo_map(&c, None, "", 60).unwrap()).join(" ");
        assert!(small.contains("minireq/models.py") || small.contains("minireq/sessions.py"), "{small}");
        assert!(!small.contains("tests/"), "{small}");
    }

    #[test]
    fn the_map_is_never_over_its_budget_as_the_tokenizer_counts() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minireq");
        let c = Confinement::new(&fixture).unwrap();
        let whole = repo_map(&c, None, "", 100_000).unwrap();
        for budget in [30, 45, 60, 90, 130, 200, 300, tokens(&whole)] {
            let map = repo_map(&c, None, "Session", budget).unwrap();
            assert!(tokens(&map) <= budget, "{} tokens at a budget of {budget}:\n{map}", tokens(&map));
        }
        // Close to the budget, not far under it: at most one line's worth of slack plus the note.
        let map = repo_map(&c, None, "", 200).unwrap();
        assert!(tokens(&map) > 150, "{} tokens:\n{map}", tokens(&map));
        assert!(!whole.contains("files shown; the rest"), "a map that fits whole has no note:\n{whole}");
        // The tokenizer is o200k's: a known count.
        assert_eq!(tokens("def slugify(text):"), 5);
    }

    #[test]
    fn a_file_the_focus_names_is_in_the_map_even_when_it_is_not_code() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minireq");
        let c = Confinement::new(&fixture).unwrap();
        let map = repo_map(&c, None, "Document the json() method in docs/usage.md.", 40).unwrap();
        assert!(map.starts_with("docs/usage.md (named in the task)\n"), "{map}");
        let tests_map = repo_map(&c, None, "Speed up `tests/test_api.py`", 4096).unwrap();
        assert_eq!(files_of(&tests_map)[0], "tests/test_api.py", "{tests_map}");
    }

    #[test]
    fn a_map_from_the_cache_is_the_map_from_the_files() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minireq");
        let c = Confinement::new(&fixture).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let uncached = repo_map_cached(&c, None, "Session", 300, None).unwrap();
        let cold = repo_map_cached(&c, None, "Session", 300, Some(cache.path())).unwrap();
        crate::map_cache::forget_loaded();
        let warm = repo_map_cached(&c, None, "Session", 300, Some(cache.path())).unwrap();
        let in_memory = repo_map_cached(&c, None, "Session", 300, Some(cache.path())).unwrap();
        assert_eq!(cold, uncached);
        assert_eq!(warm, uncached);
        assert_eq!(in_memory, uncached);
        assert!(cache.path().join("repo-map").read_dir().unwrap().next().is_some());
    }

    #[test]
    fn words_split_identifiers() {
        let w = words("parseHTTPRequest snake_case_name Slugify");
        for expected in ["parse", "httprequest", "snake", "case", "name", "slugify"] {
            assert!(w.contains(expected), "{expected} in {w:?}");
        }
    }
}

/// `TODO` and `FIXME` comments of a source text: (1-based line, the text after the marker).
/// Comments are found with tree-sitter, so a `TODO` inside a string is not one.
pub fn todo_comments(lang: Lang, source: &str) -> Vec<(usize, String)> {
    // A cheap test first: most files hold no marker at all and need no parse.
    if !source.contains("TODO") && !source.contains("FIXME") {
        return Vec::new();
    }
    let Some(tree) = parse(lang, source) else { return Vec::new() };
    let query_text = match lang {
        Lang::Rust => "(line_comment) @c (block_comment) @c",
        Lang::Python | Lang::JavaScript | Lang::TypeScript | Lang::Tsx | Lang::Go => "(comment) @c",
    };
    let Some(query) = compiled(&COMMENT_QUERIES, lang, query_text) else { return Vec::new() };
    let mut cursor = QueryCursor::new();
    let mut matches = cursor.matches(query, tree.root_node(), source.as_bytes());
    let mut found = Vec::new();
    while let Some(m) = matches.next() {
        for capture in m.captures() {
            let node = capture.node;
            let text = &source[node.start_byte()..node.end_byte()];
            for (offset, line) in text.lines().enumerate() {
                let cleaned = line.trim().trim_start_matches(['/', '*', '#', '!', '-']).trim();
                for marker in ["TODO", "FIXME"] {
                    if let Some(rest) = cleaned.strip_prefix(marker) {
                        let rest = rest.trim_start_matches(|c: char| c == ':' || c.is_whitespace());
                        // `TODO(alice): x` keeps the owner out of the title.
                        let rest = if rest.starts_with('(') {
                            rest.split_once(')').map_or(rest, |(_, r)| r.trim_start_matches([':', ' ']))
                        } else {
                            rest
                        };
                        let title = rest.trim_end_matches("*/").trim();
                        if !title.is_empty() {
                            found.push((node.start_position().row + offset + 1, title.to_owned()));
                        }
                    }
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod todo_tests {
    use super::*;

    #[test]
    fn todo_comments_are_found_in_comments_only() {
        let rust = "// TODO: handle unicode\nfn f() { let s = \"TODO: not a comment\"; }\n/* FIXME(bob): leaks\n   memory */\n";
        assert_eq!(todo_comments(Lang::Rust, rust), vec![(1, "handle unicode".into()), (3, "leaks".into())]);
        let python = "x = 1  # TODO add caching\ns = '# TODO no'\n";
        assert_eq!(todo_comments(Lang::Python, python), vec![(1, "add caching".into())]);
        assert_eq!(todo_comments(Lang::Go, "package m\n// FIXME: race\n"), vec![(2, "race".into())]);
    }
}
