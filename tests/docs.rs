//! The docs that cannot drift silently: every source file is named in ARCHITECTURE.md.
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
