//! README's C, C++, Rust and Python examples are files the test command
//! compiles and runs (`tests/c/run.sh`, `tests/readme-rust.sh`,
//! `bindings/python/tests/test_examples.py`), so they cannot drift from what
//! README shows:
//!
//! - a fenced block right after `<!-- file: PATH -->` must be the whole of
//!   PATH (relative to the repository's root);
//! - a block right after `<!-- excerpt: PATH -->` must be consecutive whole
//!   lines of PATH (indented alike, or less by the same amount);
//! - every `c`, `cpp`, `rust` and `python` block must carry one of the two.
//!
//! Blocks of other languages may carry a marker too, and are then checked
//! the same way.

use std::path::{Path, PathBuf};

/// Languages whose every README block must be a file or an excerpt.
const MUST_BE_FILES: &[&str] = &["c", "cpp", "rust", "python"];

struct Block {
    line: usize,
    language: String,
    marker: Option<(String, String)>,
    text: Vec<String>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut previous: Option<&str> = None;
    let mut lines = readme.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if let Some(language) = line.strip_prefix("```") {
            let marker = previous.and_then(|p| {
                let inner = p.strip_prefix("<!-- ")?.strip_suffix(" -->")?;
                let (kind, path) = inner.split_once(": ")?;
                Some((kind.to_owned(), path.to_owned()))
            });
            let text = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| *l != "```")
                .map(str::to_owned)
                .collect();
            blocks.push(Block {
                line: n + 1,
                language: language.trim().to_owned(),
                marker,
                text,
            });
            previous = None;
            continue;
        }
        if !line.trim().is_empty() {
            previous = Some(line);
        }
    }
    blocks
}

/// Whether `excerpt` is consecutive lines of `file`, all de-indented by the
/// same number of spaces.
fn is_excerpt(excerpt: &[String], file: &[&str]) -> bool {
    let Some(first) = excerpt.first() else {
        return false;
    };
    (0..file.len()).any(|start| {
        let indent = file[start].len() - file[start].trim_start_matches(' ').len();
        let shift = indent.saturating_sub(first.len() - first.trim_start_matches(' ').len());
        excerpt.len() <= file.len() - start
            && excerpt.iter().zip(&file[start..]).all(|(shown, real)| {
                if shown.is_empty() {
                    real.trim().is_empty()
                } else {
                    real.get(..shift).is_some_and(|p| p.trim().is_empty())
                        && &real[shift..] == shown
                }
            })
    })
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("minishard-ffi sits in the repository")
        .to_path_buf()
}

fn problems(readme: &str, root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for block in blocks(readme) {
        let at = format!("README.md:{} ({} block)", block.line, block.language);
        let Some((kind, path)) = &block.marker else {
            if MUST_BE_FILES.contains(&block.language.as_str()) {
                problems.push(format!(
                    "{at} is not marked `<!-- file: PATH -->` or `<!-- excerpt: PATH -->`: \
                     put the example in a file the tests compile and run"
                ));
            }
            continue;
        };
        let Ok(file) = std::fs::read_to_string(root.join(path)) else {
            problems.push(format!("{at} shows {path}, which does not exist"));
            continue;
        };
        let file_lines: Vec<&str> = file.lines().collect();
        let ok = match kind.as_str() {
            "file" => block
                .text
                .iter()
                .map(String::as_str)
                .eq(file_lines.iter().copied()),
            "excerpt" => is_excerpt(&block.text, &file_lines),
            other => {
                problems.push(format!("{at}: unknown marker {other:?}"));
                continue;
            }
        };
        if !ok {
            let first = block
                .text
                .iter()
                .zip(&file_lines)
                .position(|(a, b)| a != b)
                .map_or(String::new(), |i| {
                    format!(", first at line {} of the block", i + 1)
                });
            problems.push(format!(
                "{at} is not {} {path} as it is{first}: copy the file's text into README",
                if kind == "file" {
                    "the whole of"
                } else {
                    "an excerpt of"
                }
            ));
        }
    }
    problems
}

#[test]
fn readme_examples_are_the_files_the_tests_run() {
    let root = root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let problems = problems(&readme, &root);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let marked = blocks(&readme)
        .iter()
        .filter(|b| MUST_BE_FILES.contains(&b.language.as_str()))
        .count();
    assert!(
        marked >= 7,
        "README's C, C++, Rust and Python examples went missing ({marked} blocks)"
    );
}

#[test]
fn a_changed_unmarked_or_missing_example_is_caught() {
    let root = root();
    let file = std::fs::read_to_string(root.join("examples/c/node.c")).unwrap();
    let shown =
        |kind: &str, text: &str| format!("<!-- {kind}: examples/c/node.c -->\n```c\n{text}\n```\n");
    let whole = file.trim_end();
    assert!(problems(&shown("file", whole), &root).is_empty());
    let changed = whole.replacen("change me", "changed", 1);
    assert_eq!(problems(&shown("file", &changed), &root).len(), 1);
    let part = "static int64_t score(void *user_data, void *state) { (void)user_data; (void)state; return 0; }";
    assert!(problems(&shown("excerpt", part), &root).is_empty());
    assert_eq!(
        problems(&shown("excerpt", &part.replace("0;", "1;")), &root).len(),
        1
    );
    assert_eq!(problems(&format!("```c\n{part}\n```\n"), &root).len(), 1);
    assert_eq!(
        problems(
            "<!-- file: examples/c/gone.c -->\n```c\nint x;\n```\n",
            &root
        )
        .len(),
        1
    );
}
