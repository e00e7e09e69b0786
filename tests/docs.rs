//! The docs that cannot drift silently: every source file is named in ARCHITECTURE.md, every
//! relative link in README.md and docs/*.md points at a file that exists, and the README stays
//! short (the details live in docs/).
//!
//! A file counts as named when ARCHITECTURE.md holds its path (`src/fs/index/dir.rs`), or when one
//! table row holds its folder (`src/fuse/uring/`, or any path under it) and its file name in
//! backquotes (`` `queue.rs` ``).

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Whether `doc` names `rel` (a path like `src/fuse/uring/queue.rs`) as the module doc says.
fn named(doc: &str, rel: &str) -> bool {
    if doc.contains(rel) {
        return true;
    }
    let (folder, file) = match rel.rfind('/') {
        Some(i) => (&rel[..=i], &rel[i + 1..]),
        None => return false,
    };
    let quoted = format!("`{file}`");
    doc.lines()
        .filter(|line| line.trim_start().starts_with('|'))
        .any(|row| row.contains(folder) && row.contains(&quoted))
}

#[test]
fn every_source_file_is_named_in_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let missing: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(root)
                .expect("under the manifest dir")
                .to_string_lossy()
                .replace('\\', "/")
        })
        .filter(|rel| !named(&doc, rel))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name these source files (add them to the Layers table): {missing:?}"
    );
}

#[test]
fn a_row_names_a_file_only_with_its_folder() {
    let doc =
        "| x | `src/fuse/uring/` | `abi.rs` the layouts |\n| y | `src/other/` | `queue.rs` |\n";
    assert!(named(doc, "src/fuse/uring/abi.rs"));
    assert!(!named(doc, "src/fuse/uring/queue.rs"));
    assert!(!named(doc, "src/fuse/uring/bridge.rs"));
    assert!(named("see src/heap.rs", "src/heap.rs"));
}

/// The README is the door, not the house: what daxlink is, why, the two commands, a short
/// usage and links. Everything else belongs in docs/.
const README_MAX_LINES: usize = 160;

/// The targets of the Markdown links (`[text](target)`, `![alt](target)`) in `doc`, outside
/// fenced code blocks and inline code spans.
fn link_targets(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop inline code spans: the odd pieces between backquotes.
        let text: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, piece)| piece)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            match after.find(')') {
                Some(j) => {
                    out.push(after[..j].trim().to_string());
                    rest = &after[j + 1..];
                }
                None => break,
            }
        }
    }
    out
}

/// The links of `doc` (a file under `root`) that point at no file: external links (with a
/// scheme) and in-page anchors are not checked; `path#anchor` is checked as `path`.
fn broken_links(root: &Path, doc: &Path) -> Vec<String> {
    let text = fs::read_to_string(doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
    let dir = doc.parent().expect("a doc is in a folder");
    link_targets(&text)
        .into_iter()
        .filter(|t| !t.contains("://") && !t.starts_with("mailto:") && !t.starts_with('#'))
        .filter(|t| {
            let path = t.split('#').next().unwrap_or(t);
            path.is_empty() || !dir.join(path).exists()
        })
        .map(|t| format!("{}: {t}", doc.strip_prefix(root).unwrap_or(doc).display()))
        .collect()
}

/// README.md and docs/*.md, the documents whose links are checked.
fn linked_docs(root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![root.join("README.md")];
    let mut more: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = linked_docs(root);
    assert!(docs.len() >= 6, "too few documents: {docs:?}");
    let mut checked = 0;
    let mut broken = Vec::new();
    for doc in &docs {
        checked += link_targets(&fs::read_to_string(doc).unwrap()).len();
        broken.extend(broken_links(root, doc));
    }
    assert!(
        checked >= 20,
        "only {checked} links found: is the parser blind?"
    );
    assert!(
        broken.is_empty(),
        "links to files that do not exist: {broken:?}"
    );
}

#[test]
fn the_readme_stays_short() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).expect("read README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move the details into docs/"
    );
}

#[test]
fn links_are_found_outside_code_only() {
    let doc = "see [a](docs/A.md) and ![p](bench/p.svg#x) and [w](https://e.org)\n\
               `not [a](link)` [b](B.md)\n```\n[c](C.md)\n```\n";
    assert_eq!(
        link_targets(doc),
        ["docs/A.md", "bench/p.svg#x", "https://e.org", "B.md"]
    );
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("A.md"), "").unwrap();
    let doc = dir.path().join("doc.md");
    fs::write(
        &doc,
        "[ok](A.md) [gone](B.md) [anchor](#x) [ext](http://x) [a2](A.md#y)\n",
    )
    .unwrap();
    assert_eq!(broken_links(dir.path(), &doc), ["doc.md: B.md"]);
}
