//! `daxlink demo --report DIR`: a self-contained HTML page (no script, no
//! network; inline SVG and CSS) with a picture of the page model after
//! every step of every scenario, the three models side by side, and the
//! JSON it is drawn from (`demo.json`, the `--json` document plus each
//! step's recorded state).
//!
//! The markup is XHTML-compatible (every element closed, attributes quoted,
//! no named entities but XML's), so a strict XML parser can check it.

#![forbid(unsafe_code)]

mod explain;
mod svg;

use std::fmt::Write;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::pages::PageModel;
use crate::tools::demo::{to_json, ScenarioResult, SCENARIOS};

/// Escape text for XML/HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // Characters XML 1.0 does not allow at all.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// Invariants 1-7 of docs/KERNEL.md section 3: a name and what breaking it means.
pub const INVARIANTS: [(&str, &str); 7] = [
    (
        "no reuse while pinned",
        "a pinned block was freed or handed to another file while the device could still use it",
    ),
    (
        "pin isolation",
        "the device's bytes showed up in a file or offset other than the one it pinned",
    ),
    (
        "write pins exclusive",
        "a write pin was taken on a block more than one file shares",
    ),
    (
        "complete rmap",
        "the page model's reverse map (page->mapping) does not name every file that maps the block",
    ),
    (
        "poison reaches everyone",
        "a memory failure was not reported to every file that maps the block",
    ),
    (
        "dirty attribution",
        "the device's dirty data was charged to a file other than the one it wrote through",
    ),
    (
        "refcount conservation",
        "the page's refcount does not match its pins, a pinned page is free, or a free block's page still names a file or holds dirty data",
    ),
];

/// The words the pictures use without explaining them (PAGES.md has more).
pub const GLOSSARY: [(&str, &str); 7] = [
    (
        "ref N pin N map N",
        "the struct page's reference count, pin count and map count (how many files map the block)",
    ),
    (
        "pin bias of 1024",
        "each pin adds 1024 to the reference count (GUP_PIN_COUNTING_BIAS), so an allocated block with one pin reads ref 1025",
    ),
    (
        "->mapping = A[0]",
        "the single owner the struct page remembers: file A, page 0; a shared page upstream and under proxy keeps a share count instead",
    ),
    (
        "(refcount record)",
        "the on-media record that counts the files sharing a reflinked block; the block is freed when it drops to zero",
    ),
    (
        "flags: dynamic",
        "the page has proxy records (struct dynamic_page): one per owner per pin; shared: more than one file maps it; dirty: the device wrote it and nobody has written it back yet",
    ),
    (
        "FOLL_WRITE",
        "the flag that makes a pin a write pin (W); without it (R) the kernel takes no copy-on-write fault, so a shared block stays shared",
    ),
    (
        "deferred free",
        "under proxy a block freed while pinned is kept (an orphan record on media) and goes back on the free list at its last unpin",
    ),
];

/// The sentence shown at a step where invariants break.
fn why_broken(breaks: &[u8], kernel: &str) -> String {
    let what: Vec<String> = breaks
        .iter()
        .filter_map(|i| {
            INVARIANTS
                .get((*i as usize).wrapping_sub(1))
                .map(|(n, w)| format!("invariant {i} ({n}): {w}"))
        })
        .collect();
    format!(
        "What went wrong: {}; the kernel counterpart: {kernel}.",
        what.join("; ")
    )
}

const CSS: &str = r#"
body { font-family: sans-serif; margin: 1em 2em; color: #222; max-width: 1560px; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 2px solid #888; }
p, li, td, th, dd { overflow-wrap: break-word; }
code, p.step { overflow-wrap: anywhere; }
table.summary td, table.summary th { border: 1px solid #bbb; padding: 3px 8px; }
table.summary { border-collapse: collapse; max-width: 100%; }
.corrupted { background: #fdd; } .blocked, .refused { background: #ffe9b3; } .safe { background: #dfd; }
table.steps { border-collapse: collapse; table-layout: fixed; width: 100%; }
table.steps th.rowh { width: 3.5em; font-size: 0.9em; }
table.steps th.model { font-size: 1.1em; }
td.frame { vertical-align: top; border: 2px solid #ddd; padding: 4px; }
td.frame.breaks { border: 3px solid #c00; background: #fff4f4; }
td.frame.stopped { border: 3px solid #e90; background: #fffaf0; }
td.frame.ended { color: #999; }
td.frame::before { content: attr(data-model); display: none; font-weight: bold; }
p.step { font-family: monospace; margin: 2px 0 4px 0; min-height: 2.4em; }
p.say { margin: 4px 0; font-size: 0.9em; }
p.why { color: #900; } p.stop { color: #840; } p.ok { color: #264; }
.keys { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
.keys > div { flex: 1 1 24em; min-width: 0; }
dl.glossary dt { font-weight: bold; font-family: monospace; margin-top: 0.4em; }
dl.glossary dd { margin: 0 0 0 1.2em; }
svg.defs { position: absolute; }
svg.pic { display: block; width: 100%; max-width: 480px; height: auto; font-family: sans-serif; font-size: 10.5px; }
svg.legend { font-family: sans-serif; font-size: 11px; width: 100%; max-width: 500px; height: auto; }
.hd { font-weight: bold; fill: #555; } .fname { font-weight: bold; font-size: 12px; }
.t { fill: #222; } .bt { fill: #000; font-weight: bold; } .dim { fill: #888; }
.bad { fill: #c00; font-weight: bold; } .warn { fill: #b60; font-weight: bold; }
.pint { fill: #fff; font-weight: bold; }
rect.pg { fill: #e8f0ff; stroke: #36c; }
rect.blk { fill: #fff; stroke: #333; } rect.blk.pinned { stroke: #c00; stroke-width: 2; }
rect.blk.free { fill: #eee; stroke: #999; stroke-dasharray: 4 3; }
rect.blk.free.pinned { stroke: #c00; stroke-width: 2; }
rect.blk.deferred { fill: #fff1dd; stroke: #e90; stroke-width: 2; }
rect.blk.poison { fill: #f1e0ff; stroke: #70a; stroke-width: 2; }
rect.pin { fill: #c00; } rect.proxy { fill: #e9f7e9; stroke: #393; }
rect.dev { fill: #333; } rect.dev + text { fill: #fff; }
rect.fl { fill: #eee; stroke: #999; } rect.fl.hot { fill: #ffd9a8; stroke: #e90; }
path.own { fill: none; stroke: #333; stroke-width: 1.3; }
line.pinl { stroke: #c00; stroke-width: 2; } line.proxyl { stroke: #393; stroke-dasharray: 3 2; }
line.dma { stroke: #c00; stroke-width: 3; } line.dmano { stroke: #999; stroke-dasharray: 4 3; }
line.devl { stroke: #999; stroke-width: 1; }
@media (max-width: 1400px) { body { margin: 1em; } }
@media (max-width: 1100px) {
  body { margin: 0.5em; }
  table.summary td, table.summary th { padding: 2px 3px; font-size: 0.9em; }
  table.steps, table.steps tbody, table.steps tr, table.steps td, table.steps th { display: block; width: auto; }
  table.steps tr.head { display: none; }
  table.steps th.rowh { width: auto; text-align: left; margin-top: 1em; }
  td.frame { margin: 0 0 6px 0; }
  td.frame::before { display: block; }
}
"#;

fn legend() -> String {
    let mut s = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="legend" viewBox="0 0 500 130" width="500" height="130" role="img" aria-label="legend">"#,
    );
    let items: [(&str, &str); 8] = [
        (
            r#"<rect x="4" y="6" width="22" height="18" class="pg"/>"#,
            "a file's logical page",
        ),
        (
            r#"<path d="M4,45 L26,45" class="own" marker-end="url(#arrow)"/>"#,
            "page is stored in",
        ),
        (
            r#"<rect x="4" y="6" width="22" height="18" class="blk"/>"#,
            "physical block and its struct page",
        ),
        (
            r#"<rect x="4" y="36" width="22" height="18" class="blk free"/>"#,
            "free block",
        ),
        (
            r#"<rect x="4" y="6" width="22" height="18" class="blk deferred"/>"#,
            "freed while pinned: deferred (proxy)",
        ),
        (
            r#"<rect x="4" y="36" width="22" height="18" class="pin"/>"#,
            "a pin (W write, R read) through a file",
        ),
        (
            r#"<rect x="4" y="6" width="22" height="18" class="proxy"/>"#,
            "a proxy: one owner's view of the page",
        ),
        (
            r#"<path d="M4,45 L26,45" class="dma" marker-end="url(#arrow-red)" style="stroke:#c00;stroke-width:3"/>"#,
            "the device writes through the pin",
        ),
    ];
    for (i, (shape, label)) in items.iter().enumerate() {
        // Items come in pairs drawn for a top and a bottom row (even, odd);
        // two pairs side by side, then the next two below.
        let x = ((i / 2) % 2) as i64 * 250;
        let dy = (i / 4) as i64 * 64;
        let y = if i % 2 == 0 { 19 } else { 49 };
        let _ = write!(
            s,
            r#"<g transform="translate({x},{dy})">{shape}<text x="32" y="{y}" class="t">{}</text></g>"#,
            esc(label)
        );
    }
    s.push_str("</svg>");
    s
}

/// "corrupted (breaks 1,2)", "safe", ...
fn outcome_text(r: &ScenarioResult) -> String {
    if r.violated.is_empty() {
        r.outcome.name().to_string()
    } else {
        let v: Vec<String> = r.violated.iter().map(|i| i.to_string()).collect();
        format!("{} (breaks {})", r.outcome.name(), v.join(","))
    }
}

fn outcome_cell(r: Option<&ScenarioResult>) -> String {
    match r {
        Some(r) => format!(
            r#"<td class="{o}" data-outcome="{o}">{}</td>"#,
            outcome_text(r),
            o = r.outcome.name()
        ),
        None => "<td>-</td>".into(),
    }
}

/// The HTML page.
pub fn page(models: &[PageModel], results: &[ScenarioResult], ok: bool) -> String {
    let find =
        |name: &str, m: PageModel| results.iter().find(|r| r.scenario == name && r.model == m);
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>daxlink: the dax-reflink pinning problem, step by step</title>\n");
    let _ = writeln!(h, "<style>{CSS}</style>\n</head>\n<body>");
    h.push_str(svg::DEFS);
    h.push_str(
        r#"
<h1>The DAX + reflink pinning problem, step by step</h1>
<p>On a DAX filesystem a file's page <em>is</em> its storage block. A device that pins a page
(<code>pin_user_pages</code>: RDMA, O_DIRECT, a GPU) keeps reading and writing that block while the
filesystem may truncate it, punch it, copy-on-write away from it or give it to another file; with
reflink one block belongs to several files, but the kernel's <code>struct page</code> has room for
one owner (<code>page-&gt;mapping</code>, <code>page-&gt;index</code>). daxlink keeps a model of
<code>struct page</code> for every data block and ran each scenario below with real system calls
on a fresh mount, under three page models:</p>
<ul>
<li><b>legacy</b>: the 2018 kernel. The first owner wins <code>page-&gt;mapping</code>; truncate,
punch, copy-on-write and clone ignore pins.</li>
<li><b>upstream</b>: what Linux shipped. A write pin unshares first; layout changes wait for pins
(here: fail with EBUSY after a short wait); long-term pins are refused.</li>
<li><b>proxy</b>: the fix proposed in 2018. Each pin gets a per-owner proxy record (N proxies :
1 page); layout changes go ahead, and a pinned block is freed only at its last unpin.</li>
</ul>
<p>Each picture is the state the daemon reported after that step: on the left, the files as rows
of logical pages, with an arrow to the physical block holding each page; in the middle, each block
with its first bytes (the device writes <q>XXXX</q>), its sharing, and its struct page (refcount
with the pin bias of 1024, pin count, map count, <code>mapping</code>, flags); on the right, the
pins (and the device behind them) and the proxies; at the bottom, the blocks the allocator hands
out next. A <span style="color:#c00;font-weight:bold">red frame</span> marks the step where an
invariant broke, an <span style="color:#a50;font-weight:bold">orange frame</span> the step where a
layout change was refused or a pin was not allowed. The three models are side by side, one row
per step.</p>
<p>How to read a step: <code>pin(A, 0, W)</code> pins page 0 of file A for a device, for writing
(<code>R</code>: reading), and <code>h</code> is the device's handle on it; <code>dma_write(h, X)</code> is
the device writing the bytes <q>XXXX...</q> through that pin, straight into the pinned block, as
a DMA would; <code>clone A-&gt;B</code> makes B a reflink copy of A (the two share blocks until one
is written: copy on write); <q>breaks invariants 1 and 2</q> names the invariants that broke at that
step (listed below). Under each step one sentence says what it did to the page model: in red why an
invariant broke, in orange why the model stopped, otherwise what changed.</p>
"#,
    );
    h.push_str("<div class=\"keys\">\n<div>\n<h3>Legend</h3>\n");
    h.push_str(&legend());
    h.push_str("\n</div>\n<div>\n<h3 id=\"glossary\">Glossary</h3>\n<dl class=\"glossary\">\n");
    for (term, what) in GLOSSARY {
        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(what));
    }
    h.push_str("</dl>\n</div>\n</div>\n");
    h.push_str("\n<h2 id=\"invariants\">Invariants (checked after every step)</h2>\n<ol>\n");
    for (n, w) in INVARIANTS {
        let _ = writeln!(h, "<li><b>{}</b>: it breaks when {}.</li>", esc(n), esc(w));
    }
    h.push_str("</ol>\n<h2 id=\"summary\">Summary</h2>\n<table class=\"summary\">\n<tr><th></th><th>scenario</th>");
    for m in models {
        let _ = write!(h, "<th>{}</th>", m.name());
    }
    h.push_str("</tr>\n");
    for sc in SCENARIOS {
        let _ = write!(
            h,
            "<tr><th><a href=\"#{n}\">{n}</a></th><td>{}</td>",
            esc(sc.what),
            n = sc.name
        );
        for m in models {
            h.push_str(&outcome_cell(find(sc.name, *m)));
        }
        h.push_str("</tr>\n");
    }
    let _ = writeln!(
        h,
        "</table>\n<p>Expected: legacy breaks invariants in at least 6 scenarios, upstream never \
         corrupts, proxy is safe in all nine. As expected: <b>{}</b>. The data of every picture: \
         <a href=\"demo.json\">demo.json</a>.</p>",
        if ok { "yes" } else { "NO" }
    );
    for sc in SCENARIOS {
        section(&mut h, sc, models, &find);
    }
    h.push_str("<p id=\"end\">End of the report.</p>\n</body>\n</html>\n");
    h
}

fn section<'a>(
    h: &mut String,
    sc: &crate::tools::demo::Scenario,
    models: &[PageModel],
    find: &dyn Fn(&str, PageModel) -> Option<&'a ScenarioResult>,
) {
    let _ = writeln!(
        h,
        "<section class=\"scenario\" id=\"{n}\">\n<h2>{n}: {}</h2>\n<p>{}</p>\n<p>Kernel code involved: <code>{}</code>.</p>",
        esc(sc.what),
        esc(sc.story),
        esc(sc.kernel),
        n = sc.name
    );
    h.push_str("<table class=\"steps\">\n<tr class=\"head\"><th class=\"rowh\"></th>");
    for m in models {
        let (o, t) = find(sc.name, *m)
            .map(|r| (r.outcome.name(), outcome_text(r)))
            .unwrap_or(("", "-".into()));
        let _ = write!(h, "<th class=\"model {o}\">{}: {t}</th>", m.name());
    }
    h.push_str("</tr>\n");
    let rows = models
        .iter()
        .filter_map(|m| find(sc.name, *m).map(|r| r.steps.len()))
        .max()
        .unwrap_or(0);
    for i in 0..rows {
        let _ = write!(h, "<tr><th class=\"rowh\">step {}</th>", i + 1);
        for m in models {
            let Some(r) = find(sc.name, *m) else {
                h.push_str("<td class=\"frame ended\"></td>");
                continue;
            };
            let Some(s) = r.steps.get(i) else {
                let _ = write!(
                    h,
                    "<td class=\"frame ended\"><p>({} ended after step {})</p></td>",
                    m.name(),
                    r.steps.len()
                );
                continue;
            };
            let mut cls = String::from("frame");
            if !s.breaks.is_empty() {
                cls.push_str(" breaks");
            }
            if s.stopped {
                cls.push_str(" stopped");
            }
            let breaks = s
                .breaks
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let _ = write!(
                h,
                "<td class=\"{cls}\" id=\"{n}-{m}-{k}\" data-scenario=\"{n}\" data-model=\"{m}\" data-step=\"{k}\" data-breaks=\"{breaks}\">",
                n = sc.name,
                m = m.name(),
                k = i + 1
            );
            let _ = write!(h, "<p class=\"step\">{}", esc(&s.text));
            if !s.breaks.is_empty() {
                let b: Vec<String> = s.breaks.iter().map(u8::to_string).collect();
                let _ = write!(
                    h,
                    " <b class=\"brk\">(breaks invariant{} {})</b>",
                    if b.len() > 1 { "s" } else { "" },
                    crate::tools::demo::scenarios::and_list(&b)
                );
            }
            h.push_str("</p>");
            let device = s
                .device
                .as_ref()
                .map(
                    |d| serde_json::json!({"pin": d.pin, "write": d.write, "accepted": d.accepted, "process": d.process}),
                )
                .unwrap_or(Value::Null);
            // One sentence per step: why it broke, why it stopped, or what changed.
            let (cls, say) = if !s.breaks.is_empty() {
                ("why", why_broken(&s.breaks, sc.broken))
            } else if s.stopped && !sc.stopped.is_empty() {
                (
                    "stop",
                    format!(
                        "Stopped here, so nothing breaks; the kernel counterpart: {}.",
                        sc.stopped
                    ),
                )
            } else {
                let prev = i
                    .checked_sub(1)
                    .and_then(|j| r.steps.get(j))
                    .and_then(|p| p.state.clone())
                    .unwrap_or(Value::Null);
                let st = s.state.clone().unwrap_or(Value::Null);
                ("ok", explain::sentence(&st, &prev, &device))
            };
            let _ = write!(h, "<p class=\"say {cls}\">{}</p>", esc(&say));
            match &s.state {
                Some(st) => h.push_str(&svg::picture(
                    st,
                    &device,
                    &format!("{} {} step {}", sc.name, m.name(), i + 1),
                )),
                None => h.push_str("<p>(the daemon gave no snapshot for this step)</p>"),
            }
            h.push_str("</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n</section>\n");
}

/// Write `index.html` and `demo.json` into `dir` (created if needed).
/// Returns the page's path.
pub fn write(
    dir: &Path,
    models: &[PageModel],
    results: &[ScenarioResult],
    ok: bool,
) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let json =
        serde_json::to_string_pretty(&to_json(results, ok, true)).map_err(io::Error::other)?;
    fs::write(dir.join("demo.json"), json + "\n")?;
    let page_path = dir.join("index.html");
    fs::write(&page_path, page(models, results, ok))?;
    Ok(fs::canonicalize(&page_path).unwrap_or(page_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(esc("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&#39;\u{fffd}");
    }

    #[test]
    fn breaking_sentence_names_invariant_and_kernel() {
        let s = why_broken(&[1, 2], "truncate did not wait");
        assert!(s.starts_with("What went wrong: invariant 1 (no reuse while pinned)"));
        assert!(s.contains("invariant 2 (pin isolation)"));
        assert!(s.ends_with("; the kernel counterpart: truncate did not wait."));
    }
}
