//! The layers hold: no file imports from a layer above its own, and no two files import each
//! other in a loop.
//!
//! Every `src/**/*.rs` is read for the crate paths it names: `use` trees (`use crate::a::{b, c}`,
//! `use super::x`, `use child::y` for a child module of the file) and paths in the code
//! (`crate::a::f()`, `super::g`); `daxlink::` in the binaries. A path leads to the file of the
//! longest module prefix it names. Comments and `#[cfg(test)]` items are not read, and a module
//! declared under `#[cfg(test)]` (`fs/tests.rs`) is not a room: unit tests may use a tool (mkfs) to
//! build an image. A file's use of one of its own ancestor modules (`super::*`, `crate::fs::Fs`
//! from `fs/tx/ctx.rs`) is not counted for cycles: that is how Rust nests a module in its parent.
//!
//! Layers, bottom up (ARCHITECTURE.md, "Layers"): util < media < format < check < journal < space
//! < pages < fs (with `error.rs`, the core's typed errors) < fuse < tools (with `main.rs` and
//! `bin/`). `lib.rs` only lists the modules.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

const LAYERS: &[&str] = &[
    "util", "media", "format", "check", "journal", "space", "pages", "fs", "fuse", "tools",
];

/// The layer of a file (`src/`-relative path), as an index into `LAYERS`; None for lib.rs.
fn layer(rel: &str) -> Option<usize> {
    let top = rel.split('/').next().unwrap_or("");
    let top = top.strip_suffix(".rs").unwrap_or(top);
    let name = match top {
        "lib" => return None,
        "error" => "fs",
        "main" | "bin" => "tools",
        t => t,
    };
    Some(
        LAYERS
            .iter()
            .position(|l| *l == name)
            .unwrap_or_else(|| panic!("src/{rel}: no layer for `{top}` (add it to LAYERS)")),
    )
}

/// The module path of a file: `fs/tx/ctx.rs` -> [fs, tx, ctx], `fs/mod.rs` -> [fs], lib.rs -> [].
fn module_of(rel: &str) -> Vec<String> {
    let mut segs: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        segs.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segs.pop();
    }
    segs
}

/// The code without comments and without `#[cfg(test)]` items.
fn code_of(text: &str) -> String {
    let no_comments: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = no_comments.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        rest = &rest[i + "#[cfg(test)]".len()..];
        // Skip the item: up to its first `;` at depth 0, or its whole `{ ... }` block.
        let mut depth = 0usize;
        let mut end = rest.len();
        for (j, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The paths one `use` tree names, braces expanded: `a::{b, c::{d}}` -> a::b, a::c::d.
fn expand(tree: &str) -> Vec<String> {
    // Drop renames (`x as y`), then whitespace.
    let mut words: Vec<&str> = Vec::new();
    let mut it = tree.split_whitespace();
    while let Some(w) = it.next() {
        if w == "as" {
            let renamed = it.next().unwrap_or("");
            let tail = renamed.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
            words.push(tail);
        } else {
            words.push(w);
        }
    }
    let tree = words.concat();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let Some(inner) = tree.rfind('}').and_then(|close| tree.get(open + 1..close)) else {
        panic!("a `use` without its closing brace: {tree:.80}");
    };
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth <= 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(move |s| format!("{prefix}{s}")))
        .collect()
}

/// Every module path (absolute segments) the code names.
fn paths_named(code: &str) -> Vec<Vec<String>> {
    let mut raw = Vec::new();
    let mut rest = String::new();
    let mut text = code;
    while let Some(i) = text.find("use ") {
        // A `use` item starts its line, after nothing but `pub`, `pub(crate)` or the like.
        let line = text[..i].rsplit('\n').next().unwrap_or("").trim();
        let item = line.is_empty()
            || line == "pub"
            || (line.starts_with("pub(") && line.ends_with(')') && !line.contains([';', '{']));
        rest.push_str(&text[..i]);
        if !item {
            rest.push_str("use ");
            text = &text[i + 4..];
            continue;
        }
        let end = text[i..].find(';').map_or(text.len(), |e| i + e);
        raw.extend(expand(&text[i + 4..end]));
        text = &text[end..];
    }
    rest.push_str(text);
    // Paths in the code: a root and its `::ident` segments.
    let bytes = rest.as_bytes();
    for root in ["$crate::", "crate::", "super::", "self::", "daxlink::"] {
        let mut from = 0;
        while let Some(i) = rest[from..].find(root).map(|i| from + i) {
            from = i + root.len();
            let prev = if i == 0 { b' ' } else { bytes[i - 1] };
            if prev.is_ascii_alphanumeric() || prev == b'_' || prev == b':' || prev == b'$' {
                continue;
            }
            let mut end = from;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':')
            {
                end += 1;
            }
            raw.push(rest[i..end].trim_end_matches(':').to_string());
        }
    }
    raw.into_iter()
        .map(|p| {
            p.trim_start_matches('$')
                .split("::")
                .map(String::from)
                .collect()
        })
        .collect()
}

/// What the checker found: imports from a lower layer to a higher one, and cycles.
fn problems(files: &BTreeMap<String, String>) -> (Vec<String>, usize) {
    let is_bin = |rel: &str| rel == "main.rs" || rel.starts_with("bin/");
    let modules: BTreeMap<Vec<String>, String> = files
        .keys()
        .filter(|rel| !is_bin(rel))
        .map(|rel| (module_of(rel), rel.clone()))
        .collect();
    // Files declared under #[cfg(test)] are test code, not rooms.
    let mut tests = BTreeSet::new();
    for (rel, text) in files {
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for piece in flat.split("#[cfg(test)] ").skip(1) {
            let piece = piece
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if let Some(name) = piece.strip_prefix("mod ").and_then(declared_name) {
                let mut m = module_of(rel);
                m.push(name.to_string());
                if let Some(f) = modules.get(&m) {
                    tests.insert(f.clone());
                }
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for (rel, text) in files.iter().filter(|(r, _)| !tests.contains(*r)) {
        let is_bin = is_bin(rel);
        let here = if is_bin { Vec::new() } else { module_of(rel) };
        // The module `super::` and `self::` are relative to (a mod.rs is its own module).
        for path in paths_named(&code_of(text)) {
            let mut abs: Vec<String> = Vec::new();
            let mut segs = path.iter().peekable();
            match segs.peek().map(|s| s.as_str()) {
                Some("crate") if !is_bin => {
                    segs.next();
                }
                Some("daxlink") if is_bin => {
                    segs.next();
                }
                Some("self") | Some("super") => {
                    abs = here.clone();
                    while let Some(s) = segs.peek() {
                        match s.as_str() {
                            "self" => {}
                            "super" => {
                                abs.pop();
                            }
                            _ => break,
                        }
                        segs.next();
                    }
                }
                Some(first) if !is_bin => {
                    let mut child = here.clone();
                    child.push(first.to_string());
                    if !modules.contains_key(&child) {
                        continue; // another crate, or a name in scope
                    }
                    abs = here.clone();
                }
                _ => continue,
            }
            abs.extend(segs.cloned());
            let target = (0..=abs.len())
                .rev()
                .find_map(|n| modules.get(&abs[..n]).filter(|_| n > 0));
            let Some(target) = target else { continue };
            if target == rel || tests.contains(target) {
                continue;
            }
            if let (Some(a), Some(b)) = (layer(rel), layer(target)) {
                if a < b {
                    out.push(format!(
                        "upward import: src/{rel} ({}) uses src/{target} ({}) by `{}`",
                        LAYERS[a],
                        LAYERS[b],
                        path.join("::")
                    ));
                }
            }
            // A file's use of its own ancestor module is not a cycle edge.
            let tm = module_of(target);
            let ancestor = !is_bin && tm.len() < here.len() && here.starts_with(&tm);
            if !ancestor && target != "lib.rs" {
                edges.entry(rel.clone()).or_default().insert(target.clone());
            }
        }
    }
    out.extend(
        cycles(&edges)
            .into_iter()
            .map(|c| format!("cycle: {}", c.join(" -> "))),
    );
    out.sort();
    out.dedup();
    (out, edges.values().map(BTreeSet::len).sum())
}

/// `name; rest` -> `name`: the module a `mod name;` declares (None for `mod name { ... }`).
fn declared_name(s: &str) -> Option<&str> {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    s[end..].starts_with(';').then(|| &s[..end])
}

/// One loop for each group of files that reach each other, as a path `a -> b -> a`.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(f) = todo.pop() {
            for t in edges.get(&f).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    todo.push(t.clone());
                }
            }
        }
        seen
    };
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for start in edges.keys() {
        if done.contains(start) || !reach(start).contains(start) {
            continue;
        }
        // Breadth-first back to `start`: the shortest loop through it.
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        'bfs: while let Some(f) = queue.pop_front() {
            for t in edges.get(&f).into_iter().flatten() {
                if t == start {
                    prev.insert(format!("{start}#end"), f.clone());
                    break 'bfs;
                }
                if !prev.contains_key(t) {
                    prev.insert(t.clone(), f.clone());
                    queue.push_back(t.clone());
                }
            }
        }
        let mut path = vec![start.clone()];
        let mut at = prev[&format!("{start}#end")].clone();
        while at != *start {
            path.push(at.clone());
            at = prev[&at].clone();
        }
        path.push(start.clone());
        let n = path.len();
        path[1..n - 1].reverse();
        // One loop per group: every file on a loop with `start` is done.
        let group = reach(start)
            .into_iter()
            .filter(|n| reach(n).contains(start));
        done.extend(group);
        out.push(path.iter().map(|p| format!("src/{p}")).collect());
    }
    out
}

fn read_tree(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            read_tree(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(rel, fs::read_to_string(&p).expect("read source"));
        }
    }
}

#[test]
fn no_upward_import_and_no_cycle_in_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(&src, &src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let (found, edges) = problems(&files);
    // The checker must have read the imports at all (about 240 file-to-file edges).
    assert!(edges > 150, "only {edges} imports between files found");
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

#[test]
fn the_checker_sees_an_upward_import_a_cycle_and_skips_tests_and_comments() {
    let files = tree(&[
        (
            "lib.rs",
            "pub mod media; pub mod format; pub mod fs; pub mod tools;",
        ),
        ("main.rs", "use daxlink::{fs::Fs, tools::mkfs};"),
        (
            "media/mod.rs",
            "use crate::fs::{Fs, Inode as I};\n#[cfg(test)]\nmod t { use crate::tools::mkfs; }",
        ),
        (
            "format/mod.rs",
            "use crate::media::Map; // crate::tools::mkfs\n",
        ),
        (
            "fs/mod.rs",
            "mod a; mod b;\n#[cfg(test)]\nmod tests;\npub struct Fs;",
        ),
        ("fs/a.rs", "use super::b::X;\n"),
        (
            "fs/b.rs",
            "pub fn f() { super::a::g(); let _ = super::Fs; }",
        ),
        ("fs/tests.rs", "use crate::tools::mkfs::mkfs;"),
        ("tools/mkfs.rs", "use crate::{format, fs::Fs};"),
        ("util/mod.rs", "pub fn h() { crate::format::x(); }"),
    ]);
    let (found, edges) = problems(&files);
    // main -> fs, mkfs; media -> fs; format -> media; fs/a <-> fs/b; mkfs -> format, fs; util -> format
    assert_eq!(edges, 9);
    let want = [
        "cycle: src/fs/a.rs -> src/fs/b.rs -> src/fs/a.rs",
        "upward import: src/media/mod.rs (media) uses src/fs/mod.rs (fs) by `crate::fs::Fs`",
        "upward import: src/media/mod.rs (media) uses src/fs/mod.rs (fs) by `crate::fs::Inode`",
        "upward import: src/util/mod.rs (util) uses src/format/mod.rs (format) by `crate::format::x`",
    ];
    assert_eq!(found, want, "{found:#?}");
}

#[test]
fn use_trees_expand() {
    assert_eq!(
        expand("crate::a::{b, c::{d, e as f}, self}"),
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c::e",
            "crate::a::self"
        ]
    );
    assert_eq!(expand("super::x as y"), ["super::x"]);
}
