//! Every reference in the documentation points at something that exists, so
//! a reader never follows a link into nothing:
//!
//! - in README.md, docs/*.md, bindings/python/README.md and the headers in
//!   include/: every relative Markdown link names an existing file (and, for
//!   a Markdown file, an existing heading when it has a `#fragment`), and
//!   every repository path they mention (`examples/c/node.c`,
//!   `minishard/tests/tamper.rs`, ...) exists;
//! - in those and in every source file (doc comments, docstrings, stubs,
//!   tests): a citation of `docs/design.md` names a section that the
//!   design document has, and nothing cites the upstream `DESIGN.md`, which
//!   is not in the repository.

use std::path::{Path, PathBuf};

/// The folders at the repository's root that documentation mentions paths
/// under. A word starting with one of them and a slash is a path to check.
const TOP_LEVEL: &[&str] = &[
    "minishard/",
    "minishard-ffi/",
    "bindings/",
    "include/",
    "examples/",
    "tests/",
    "scripts/",
    "docs/",
    ".ci/",
];

/// Paths the documentation names that the build or the tests create; none
/// is in a fresh clone.
const CREATED_BY_THE_BUILD: &[&str] = &[
    "bindings/python/.venv",
    "bindings/python/target",
    "minishard/fuzz/corpus",
    "minishard/fuzz/artifacts",
    "tests/build",
    "examples/node/node_modules",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("minishard-ffi sits in the repository")
        .to_path_buf()
}

/// The documents whose links and paths are checked, relative to the root.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![
        PathBuf::from("README.md"),
        PathBuf::from("bindings/python/README.md"),
        PathBuf::from("include/minishard.h"),
        PathBuf::from("include/minishard.hpp"),
    ];
    let mut design: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ is readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(root).expect("under the root").to_path_buf())
        .collect();
    design.sort();
    docs.extend(design);
    docs
}

/// Every source file that may cite the design document.
fn sources(root: &Path) -> Vec<PathBuf> {
    const SKIP_DIRS: &[&str] = &[
        "target",
        "target-before",
        ".venv",
        "node_modules",
        "build",
        "__pycache__",
        ".git",
        // A frozen copy of an earlier release's header, kept as it shipped
        // for the ABI test.
        "old-header",
    ];
    // This file names the upstream document on purpose, to refuse it.
    const CHECKER: &str = "links.rs";
    const EXTENSIONS: &[&str] = &[
        "rs", "py", "pyi", "h", "hpp", "c", "cpp", "md", "sh", "js", "toml",
    ];
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if !SKIP_DIRS.contains(&name.to_string_lossy().as_ref()) {
                    walk(&path, out);
                }
            } else if name == CHECKER {
                continue;
            } else if path
                .extension()
                .is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().as_ref()))
                || name == "run"
                || name == "test-all"
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// The GitHub anchor of a Markdown heading: lower case, punctuation other
/// than `-` and `_` dropped, spaces made hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn headings(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(line.trim_start_matches('#').trim().to_owned());
        }
    }
    out
}

/// The section numbers docs/design.md has: `## 6. Allocation` gives `6`,
/// `### 6.3 Conflicts` gives `6.3`, and a numbered item `3. **Conflicts.**`
/// under a numbered section gives `7.3`.
fn design_sections(design: &str) -> Vec<String> {
    let mut sections = Vec::new();
    let mut current: Option<String> = None;
    let mut in_code = false;
    for line in design.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if line.starts_with('#') {
            let title = line.trim_start_matches('#').trim();
            let number: String = title
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let number = number.trim_end_matches('.').to_owned();
            current = (!number.is_empty()).then(|| number.clone());
            if !number.is_empty() {
                sections.push(number);
            }
            continue;
        }
        if let (Some(section), Some((item, _))) = (&current, line.split_once(". ")) {
            if !section.contains('.')
                && !item.is_empty()
                && item.chars().all(|c| c.is_ascii_digit())
            {
                sections.push(format!("{section}.{item}"));
            }
        }
    }
    sections
}

/// Relative Markdown link targets in `text` (`[label](target)`), with the
/// line each is on; code blocks have none.
fn markdown_links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            rest = &rest[end..];
            let external = ["http://", "https://", "mailto:"]
                .iter()
                .any(|scheme| target.starts_with(scheme));
            if !external && !target.contains(' ') && !target.is_empty() {
                out.push((n + 1, target.to_owned()));
            }
        }
    }
    out
}

/// Words in `text` that are repository paths: they start with one of
/// [`TOP_LEVEL`] right after a space, a quote, a backtick or a bracket.
fn mentioned_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for (start, _) in line.char_indices() {
            let before = line[..start].chars().next_back();
            if before.is_some_and(|c| !matches!(c, ' ' | '`' | '(' | '[' | '"' | '\'' | '*')) {
                continue;
            }
            let tail = &line[start..];
            if !TOP_LEVEL.iter().any(|top| tail.starts_with(top)) {
                continue;
            }
            let word: String = tail
                .chars()
                .take_while(|c| {
                    c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '*' | '{')
                })
                .collect();
            // Up to a glob or brace: what follows names several files.
            let word = word.split(['*', '{']).next().unwrap_or_default();
            let word = word.trim_end_matches(['.', ',', ':']);
            out.push((n + 1, word.to_owned()));
        }
    }
    out
}

/// Citations of the design document in `text`: the section each names, or
/// `None` for a citation of the upstream `DESIGN.md`, which is not here.
fn design_citations(text: &str) -> Vec<(usize, Option<String>)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        out.extend(line.matches("DESIGN.md").map(|_| (n + 1, None)));
        let mut rest = line;
        while let Some(at) = rest.find("docs/design.md") {
            rest = &rest[at + "docs/design.md".len()..];
            let after = rest
                .trim_start_matches(['#', ' '])
                .trim_start_matches("section")
                .trim_start_matches("§")
                .trim_start();
            let number: String = after
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let number = number.trim_end_matches('.');
            if !number.is_empty() {
                out.push((n + 1, Some(number.to_owned())));
            }
        }
    }
    out
}

/// What is wrong with the links and paths of `text`, the document at
/// `doc` (relative to `root`).
fn document_problems(root: &Path, doc: &Path, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let dir = doc.parent().unwrap_or(Path::new(""));
    for (line, target) in markdown_links(text) {
        let at = format!("{}:{line}", doc.display());
        let (file, fragment) = match target.split_once('#') {
            Some((file, fragment)) => (file, Some(fragment)),
            None => (target.as_str(), None),
        };
        let path = if file.is_empty() {
            doc.to_path_buf()
        } else {
            dir.join(file)
        };
        if !file.is_empty() && !root.join(&path).exists() {
            problems.push(format!(
                "{at} links to {target}, but {} does not exist",
                path.display()
            ));
            continue;
        }
        let Some(fragment) = fragment else { continue };
        if path.extension().is_some_and(|e| e == "md") {
            let linked = if file.is_empty() {
                text.to_owned()
            } else {
                std::fs::read_to_string(root.join(&path)).unwrap_or_default()
            };
            if !headings(&linked).iter().any(|h| anchor(h) == fragment) {
                problems.push(format!(
                    "{at} links to {target}, but {} has no heading #{fragment}",
                    path.display()
                ));
            }
        }
    }
    for (line, path) in mentioned_paths(text) {
        let exists = root.join(&path).exists()
            || CREATED_BY_THE_BUILD
                .iter()
                .any(|made| path.trim_end_matches('/').starts_with(made));
        if !exists {
            problems.push(format!(
                "{}:{line} mentions {path}, which does not exist",
                doc.display()
            ));
        }
    }
    problems
}

/// What is wrong with the citations of the design document in `text`.
fn citation_problems(name: &str, text: &str, sections: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (line, section) in design_citations(text) {
        match section {
            None => problems.push(format!(
                "{name}:{line} cites DESIGN.md, which is not in the repository: \
                 cite docs/design.md and its section"
            )),
            Some(section) if !sections.contains(&section) => problems.push(format!(
                "{name}:{line} cites docs/design.md {section}, which has no such section"
            )),
            Some(_) => {}
        }
    }
    problems
}

fn design_sections_here(root: &Path) -> Vec<String> {
    design_sections(&std::fs::read_to_string(root.join("docs/design.md")).expect("docs/design.md"))
}

#[test]
fn every_link_and_path_in_the_docs_exists() {
    let root = root();
    let mut problems = Vec::new();
    for doc in documents(&root) {
        let text = std::fs::read_to_string(root.join(&doc))
            .unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
        problems.extend(document_problems(&root, &doc, &text));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_citation_of_the_design_names_a_section_it_has() {
    let root = root();
    let sections = design_sections_here(&root);
    let mut problems = Vec::new();
    let sources = sources(&root);
    assert!(
        sources.len() > 50,
        "found only {} source files",
        sources.len()
    );
    for source in sources {
        let Ok(text) = std::fs::read_to_string(&source) else {
            continue;
        };
        let name = source
            .strip_prefix(&root)
            .unwrap_or(&source)
            .display()
            .to_string();
        problems.extend(citation_problems(&name, &text, &sections));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_design_document_has_the_sections_others_cite() {
    let sections = design_sections_here(&root());
    for wanted in [
        "3", "5", "6.1", "6.3", "6.6", "7", "7.1", "7.10", "8.4", "10",
    ] {
        assert!(
            sections.contains(&wanted.to_owned()),
            "docs/design.md has no section {wanted}: {sections:?}"
        );
    }
}

#[test]
fn a_missing_file_heading_or_section_is_caught() {
    let root = root();
    let sections = design_sections_here(&root);
    let check = |text: &str| {
        let mut found = document_problems(&root, Path::new("docs/example.md"), text);
        found.extend(citation_problems("docs/example.md", text, &sections));
        found
    };
    let fine =
        "[ok](../README.md#python), [here](#a) `examples/c/node.c`, docs/design.md 6.3\n# A\n";
    assert_eq!(check(fine), Vec::<String>::new());
    assert_eq!(check("[gone](README-section.md)\n").len(), 1);
    assert_eq!(check("[heading](../README.md#no-such-heading)\n").len(), 1);
    assert_eq!(check("see `tests/tamper.rs` for it\n").len(), 1);
    assert_eq!(check("as DESIGN.md 6.3 says\n").len(), 1);
    assert_eq!(check("as docs/design.md 6.9 says\n").len(), 1);
    assert_eq!(check("as docs/design.md section 12 says\n").len(), 1);
}
