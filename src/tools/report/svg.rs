//! One step's picture, drawn from the page model's snapshot after it
//! (`Fs::snapshot`, recorded by the demo): files as rows of logical pages
//! on the left, arrows from each page to the physical block that holds it,
//! each block's `struct page` (refcount, pins, mapcount, mapping, flags),
//! the pins with the device behind them and the proxies (N:1 onto the
//! page) on the right, and the head of the free list at the bottom.
//!
//! Plain SVG strings, every text escaped; the arrow heads are defined once
//! per page (`DEFS`).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use super::esc;

/// Marker definitions shared by every picture on the page.
pub const DEFS: &str = concat!(
    r##"<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0" class="defs"><defs>"##,
    r##"<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker>"##,
    r##"<marker id="arrow-red" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#c00"/></marker>"##,
    r##"<marker id="arrow-grey" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#999"/></marker>"##,
    "</defs></svg>"
);

const W: i64 = 480;
const FILE_X: i64 = 6;
const PAGE_X: i64 = 62;
const PAGE_W: i64 = 22;
const BLOCK_X: i64 = 150;
const BLOCK_W: i64 = 168;
const TAG_X: i64 = 330;
const LINE: i64 = 13;
const TOP: i64 = 40;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Names of the files by inode ("/A" → "A"), for labels like `A[0]`.
fn names(state: &Value) -> BTreeMap<u64, String> {
    state["files"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    let n = f["path"]
                        .as_str()
                        .map(|p| p.trim_start_matches('/').to_string())
                        .unwrap_or_else(|| format!("ino {}", u(&f["inode"])));
                    (u(&f["inode"]), n)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn owner_label(names: &BTreeMap<u64, String>, ino: u64, idx: u64) -> String {
    match names.get(&ino) {
        Some(n) => format!("{n}[{idx}]"),
        None => format!("ino {ino}[{idx}]"),
    }
}

fn pairs(v: &Value) -> Vec<(u64, u64)> {
    v.as_array()
        .map(|a| a.iter().map(|p| (u(&p[0]), u(&p[1]))).collect())
        .unwrap_or_default()
}

fn text(out: &mut String, x: i64, y: i64, class: &str, s: &str) {
    let _ = write!(
        out,
        r#"<text x="{x}" y="{y}" class="{class}">{}</text>"#,
        esc(s)
    );
}

/// The lines written inside a block's box, with a class each.
fn block_lines(
    b: &Value,
    state: &Value,
    names: &BTreeMap<u64, String>,
) -> Vec<(String, &'static str)> {
    let n = u(&b["block"]);
    let mut l = vec![(
        format!(
            "block {n}: \u{201c}{}\u{201d}",
            b["head"].as_str().unwrap_or("?")
        ),
        "bt",
    )];
    let owners = pairs(&b["owners"]);
    if b["poisoned"].as_bool() == Some(true) {
        let told: Vec<String> = b["notified"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        names
                            .get(&u(i))
                            .cloned()
                            .unwrap_or_else(|| u(i).to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        l.push((
            format!(
                "POISONED; told: {}",
                if told.is_empty() {
                    "nobody".into()
                } else {
                    told.join(", ")
                }
            ),
            "bad",
        ));
    }
    if b["deferred"].as_bool() == Some(true) {
        l.push(("deferred free: waits for unpin".into(), "warn"));
    } else if b["allocated"].as_bool() == Some(false) {
        l.push((
            "FREE (on the free list)".into(),
            if b["pins"].as_array().is_some_and(|p| !p.is_empty()) {
                "bad"
            } else {
                "dim"
            },
        ));
    } else if owners.len() > 1 {
        l.push((format!("shared by {} (refcount record)", owners.len()), "t"));
    } else if owners.is_empty() {
        l.push(("allocated, no file maps it".into(), "warn"));
    }
    if let Some(p) = b["page"].as_object() {
        l.push((
            format!(
                "page: ref {} pin {} map {}",
                u(&p["refcount"]),
                u(&p["pincount"]),
                u(&p["mapcount"])
            ),
            "t",
        ));
        let m = match p["mapping"].as_u64() {
            Some(ino) => format!("->mapping = {}", owner_label(names, ino, u(&p["index"]))),
            // Upstream and proxy keep a share count in ->index instead.
            None if u(&p["index"]) > 1 => {
                format!("->mapping = none (shared {})", u(&p["index"]))
            }
            None => "->mapping = none".to_string(),
        };
        l.push((m, "t"));
        let flags: Vec<&str> = p["flags"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !flags.is_empty() {
            l.push((format!("flags: {}", flags.join(" ")), "t"));
        }
    }
    // The model's reverse map, where it is not the truth (invariant 4).
    let rmap = pairs(&b["rmap"]);
    let missing: Vec<String> = owners
        .iter()
        .filter(|o| !rmap.contains(o))
        .map(|o| owner_label(names, o.0, o.1))
        .collect();
    if !missing.is_empty() && b["page"].is_object() {
        l.push((format!("rmap misses {}", missing.join(", ")), "bad"));
    }
    for d in state["dirty"].as_array().into_iter().flatten() {
        if u(&d["block"]) == n {
            let (a, o) = (u(&d["attributed"]), u(&d["owner"]));
            let an = names.get(&a).cloned().unwrap_or_else(|| a.to_string());
            let cls = if a == o { "t" } else { "bad" };
            l.push((format!("dirty data charged to {an}"), cls));
        }
    }
    l
}

/// Draw one step. `device`: what the device did during the step (from the
/// demo's `Step.device`).
pub fn picture(state: &Value, device: &Value, label: &str) -> String {
    let names = names(state);
    let files = state["files"].as_array().cloned().unwrap_or_default();
    let blocks = state["blocks"].as_array().cloned().unwrap_or_default();
    let pins = state["pins"].as_array().cloned().unwrap_or_default();
    let proxies = state["proxies"].as_array().cloned().unwrap_or_default();
    let mut body = String::new();
    // Blocks: a column of boxes, each as tall as its text.
    let mut by = TOP;
    let mut bpos: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
    for b in &blocks {
        let n = u(&b["block"]);
        let lines = block_lines(b, state, &names);
        let h = lines.len() as i64 * LINE + 8;
        let pinned = b["pins"].as_array().is_some_and(|p| !p.is_empty());
        let cls = if b["poisoned"].as_bool() == Some(true) {
            "blk poison"
        } else if b["deferred"].as_bool() == Some(true) {
            "blk deferred"
        } else if b["allocated"].as_bool() == Some(false) && pinned {
            "blk free pinned"
        } else if b["allocated"].as_bool() == Some(false) {
            "blk free"
        } else if pinned {
            "blk pinned"
        } else {
            "blk"
        };
        let _ = write!(
            body,
            r#"<rect x="{BLOCK_X}" y="{by}" width="{BLOCK_W}" height="{h}" rx="3" class="{cls}"/>"#
        );
        for (i, (s, c)) in lines.iter().enumerate() {
            text(&mut body, BLOCK_X + 4, by + 12 + i as i64 * LINE, c, s);
        }
        bpos.insert(n, (by, h));
        by += h + 10;
    }
    // Files: a row of page boxes each, and an arrow from each page to its block.
    let mut fy = TOP;
    for f in &files {
        let mut name = names.get(&u(&f["inode"])).cloned().unwrap_or_default();
        // Direct-access leases on the file: the process holding each.
        for l in state["leases"].as_array().into_iter().flatten() {
            if u(&l["inode"]) == u(&f["inode"]) {
                let w = if l["write"].as_bool() == Some(true) {
                    "W"
                } else {
                    "R"
                };
                let _ = write!(name, " [lease pid {} {w}]", u(&l["pid"]));
            }
        }
        text(&mut body, FILE_X, fy + 15, "fname", &name);
        let pages = f["pages"].as_array().cloned().unwrap_or_default();
        if pages.is_empty() {
            text(&mut body, PAGE_X, fy + 15, "dim", "(no pages)");
        }
        for (i, p) in pages.iter().take(3).enumerate() {
            let x = PAGE_X + i as i64 * (PAGE_W + 4);
            let _ = write!(
                body,
                r#"<rect x="{x}" y="{fy}" width="{PAGE_W}" height="20" class="pg"/>"#
            );
            text(&mut body, x + 4, fy + 14, "t", &u(&p["index"]).to_string());
            if let Some((y, h)) = bpos.get(&u(&p["block"])) {
                let _ = write!(
                    body,
                    r#"<path d="M{},{} C{},{} {},{} {},{}" class="own" marker-end="url(#arrow)"/>"#,
                    x + PAGE_W,
                    fy + 10,
                    x + PAGE_W + 30,
                    fy + 10,
                    BLOCK_X - 30,
                    y + h / 2,
                    BLOCK_X - 2,
                    y + h / 2
                );
            }
        }
        if pages.len() > 3 {
            text(
                &mut body,
                PAGE_X + 3 * (PAGE_W + 4),
                fy + 14,
                "dim",
                &format!("+{}", pages.len() - 3),
            );
        }
        fy += 34;
    }
    // Pins (tags beside their blocks) and their proxies; the device above.
    let dev_pin = device["pin"].as_u64();
    let _ = write!(
        body,
        r#"<rect x="{}" y="4" width="90" height="22" rx="4" class="dev"/>"#,
        TAG_X + 40
    );
    text(&mut body, TAG_X + 50, 19, "bt", "device (DMA)");
    let mut tag_y: BTreeMap<u64, i64> = BTreeMap::new();
    for p in &pins {
        let id = u(&p["id"]);
        let who = owner_label(&names, u(&p["inode"]), u(&p["index"]));
        let kind = format!(
            "pin #{id} {}{} via {who}",
            if p["write"].as_bool() == Some(true) {
                "W"
            } else {
                "R"
            },
            if p["longterm"].as_bool() == Some(true) {
                " long-term"
            } else {
                ""
            },
        );
        for b in p["blocks"].as_array().into_iter().flatten() {
            let Some((y, _)) = bpos.get(&u(b)) else {
                continue;
            };
            let ty = *tag_y.entry(u(b)).and_modify(|t| *t += 20).or_insert(*y);
            let _ = write!(
                body,
                r#"<rect x="{TAG_X}" y="{ty}" width="142" height="16" rx="3" class="pin"/>"#
            );
            text(&mut body, TAG_X + 3, ty + 12, "pint", &kind);
            let _ = write!(
                body,
                r#"<line x1="{TAG_X}" y1="{}" x2="{}" y2="{}" class="pinl"/>"#,
                ty + 8,
                BLOCK_X + BLOCK_W,
                ty + 8
            );
            // The device reaches the block through this pin.
            let (cls, marker, what) = match (
                dev_pin == Some(id),
                device["accepted"].as_bool(),
                device["write"].as_bool(),
            ) {
                (true, Some(true), Some(true)) => ("dma", "arrow-red", "writes X"),
                (true, Some(true), _) => ("dma", "arrow-red", "reads"),
                (true, Some(false), _) => ("dmano", "arrow-grey", "write refused"),
                _ => ("devl", "arrow-grey", ""),
            };
            let _ = write!(
                body,
                r#"<line x1="{}" y1="26" x2="{}" y2="{}" class="{cls}" marker-end="url(#{marker})"/>"#,
                TAG_X + 85,
                TAG_X + 120,
                ty - 1
            );
            if !what.is_empty() {
                let c = if cls == "dma" { "bad" } else { "dim" };
                text(&mut body, TAG_X + 2, ty - 3, c, &format!("device {what}"));
            }
        }
    }
    for x in &proxies {
        let Some((y, h)) = bpos.get(&u(&x["page"])) else {
            continue;
        };
        let ty = *tag_y
            .entry(u(&x["page"]))
            .and_modify(|t| *t += 20)
            .or_insert(*y);
        let lbl = format!(
            "proxy #{}: {}{}",
            u(&x["id"]),
            owner_label(&names, u(&x["owner"]), u(&x["index"])),
            if x["dirty"].as_bool() == Some(true) {
                " dirty"
            } else {
                ""
            }
        );
        let _ = write!(
            body,
            r#"<rect x="{}" y="{ty}" width="128" height="16" rx="3" class="proxy"/>"#,
            TAG_X + 14
        );
        text(&mut body, TAG_X + 17, ty + 12, "t", &lbl);
        let _ = write!(
            body,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" class="proxyl" marker-end="url(#arrow)"/>"#,
            TAG_X + 14,
            ty + 8,
            BLOCK_X + BLOCK_W + 1,
            y + h - 6
        );
    }
    // The free list: the blocks the allocator hands out next.
    let bottom = by.max(fy).max(TOP + 60) + 4;
    text(&mut body, FILE_X, bottom + 14, "fname", "free list");
    let next = state["free"]["next"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, b) in next.iter().enumerate() {
        let x = 70 + i as i64 * 44;
        let cls = if bpos.contains_key(&u(b)) {
            "fl hot"
        } else {
            "fl"
        };
        let _ = write!(
            body,
            r#"<rect x="{x}" y="{bottom}" width="40" height="20" class="{cls}"/>"#
        );
        text(&mut body, x + 4, bottom + 14, "t", &u(b).to_string());
    }
    text(
        &mut body,
        70 + next.len() as i64 * 44 + 4,
        bottom + 14,
        "dim",
        &format!(
            "({} free; allocated left first)",
            u(&state["free"]["count"])
        ),
    );
    let h = bottom + 28;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="pic" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{}">"#,
        esc(label)
    );
    text(&mut out, FILE_X, 18, "hd", "files (pages)");
    text(&mut out, BLOCK_X, 18, "hd", "blocks / struct page");
    out.push_str(&body);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::picture;
    use serde_json::{json, Value};

    #[test]
    fn any_json_draws_without_panicking() {
        for v in [
            Value::Null,
            json!({}),
            json!({"files": 3, "blocks": [1, "x", null]}),
        ] {
            let s = picture(&v, &Value::Null, "<odd>");
            assert!(s.starts_with("<svg ") && s.ends_with("</svg>"));
            assert!(s.contains("aria-label=\"&lt;odd&gt;\""));
        }
    }

    #[test]
    fn two_proxies_point_at_one_page_and_names_are_escaped() {
        let state = json!({
            "files": [{"inode": 2, "path": "/a<&>", "size": 4096, "pages": [{"index": 0, "block": 9}]},
                      {"inode": 3, "path": "/b", "size": 4096, "pages": [{"index": 0, "block": 9}]}],
            "blocks": [{"block": 9, "allocated": true, "head": "aaaa", "owners": [[2, 0], [3, 0]],
                        "rmap": [[2, 0], [3, 0]], "pins": [1, 2], "deferred": false, "poisoned": false,
                        "page": {"refcount": 2049, "pincount": 2, "mapcount": 2, "mapping": null,
                                 "index": 2, "flags": ["shared", "dynamic"], "proxies": [5, 6]}}],
            "pins": [{"id": 1, "inode": 2, "index": 0, "blocks": [9], "write": false},
                     {"id": 2, "inode": 3, "index": 0, "blocks": [9], "write": false}],
            "proxies": [{"id": 5, "page": 9, "owner": 2, "index": 0},
                        {"id": 6, "page": 9, "owner": 3, "index": 0}],
            "free": {"count": 10, "next": [10, 11]},
        });
        let s = picture(
            &state,
            &json!({"pin": 1, "write": true, "accepted": true}),
            "t",
        );
        assert_eq!(s.matches("class=\"proxy\"").count(), 2);
        assert_eq!(s.matches("class=\"proxyl\"").count(), 2);
        assert_eq!(s.matches("class=\"own\"").count(), 2);
        assert!(s.contains("a&lt;&amp;&gt;[0]"));
        assert!(s.contains("device writes X"));
        assert!(!s.contains("/a<"));
        let mut leased = state.clone();
        leased["leases"] = json!([{"id": 1, "inode": 3, "pid": 4242, "write": true}]);
        let s = picture(&leased, &Value::Null, "t");
        assert!(s.contains("[lease pid 4242 W]"), "{s}");
    }
}
