//! The sentence under a step that neither breaks an invariant nor stops:
//! what changed in the page model, read from the recorded snapshots (this
//! step's and the one before), so it says what the daemon reported and not
//! what the scenario meant to do.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::tools::demo::scenarios::and_list;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn names(state: &Value) -> BTreeMap<u64, String> {
    arr(&state["files"])
        .iter()
        .map(|f| {
            let n = f["path"]
                .as_str()
                .map(|p| p.trim_start_matches('/').to_string())
                .unwrap_or_else(|| format!("inode {}", u(&f["inode"])));
            (u(&f["inode"]), n)
        })
        .collect()
}

/// (file name, page index) -> block, for every mapped page.
fn mapped(state: &Value, names: &BTreeMap<u64, String>) -> BTreeMap<(String, u64), u64> {
    let mut m = BTreeMap::new();
    for f in arr(&state["files"]) {
        let n = names.get(&u(&f["inode"])).cloned().unwrap_or_default();
        for p in arr(&f["pages"]) {
            m.insert((n.clone(), u(&p["index"])), u(&p["block"]));
        }
    }
    m
}

fn block(state: &Value, n: u64) -> Option<&Value> {
    arr(&state["blocks"]).iter().find(|b| u(&b["block"]) == n)
}

fn owner_names(b: &Value, names: &BTreeMap<u64, String>) -> Vec<String> {
    let mut v: Vec<String> = arr(&b["owners"])
        .iter()
        .map(|o| names.get(&u(&o[0])).cloned().unwrap_or_else(|| "?".into()))
        .collect();
    v.dedup();
    v
}

/// One sentence on the step, from its snapshot `state`, the one before it
/// (`prev`, Null at the first step) and what the device did (`device`).
pub fn sentence(state: &Value, prev: &Value, device: &Value) -> String {
    let nm = names(state);
    let pnm = names(prev);
    let mut c: Vec<String> = Vec::new();
    let pins: BTreeMap<u64, &Value> = arr(&state["pins"])
        .iter()
        .map(|p| (u(&p["id"]), p))
        .collect();
    let prev_pins: BTreeMap<u64, &Value> = arr(&prev["pins"])
        .iter()
        .map(|p| (u(&p["id"]), p))
        .collect();
    // What the device did through its pin.
    if let Some(id) = device["pin"].as_u64() {
        let blk = pins.get(&id).and_then(|p| arr(&p["blocks"]).first()).map(u);
        let at = blk.map(|b| format!(" block {b}")).unwrap_or_default();
        let whose = blk
            .and_then(|b| block(state, b))
            .map(|b| owner_names(b, &nm))
            .filter(|o| !o.is_empty())
            .map(|o| format!(", which only {} maps", and_list(&o)))
            .unwrap_or_default();
        let whose = if whose.contains(" and ") {
            whose
                .replace("which only ", "which ")
                .replace(" maps", " map")
        } else {
            whose
        };
        match (device["accepted"].as_bool(), device["write"].as_bool()) {
            (Some(false), _) => c.push(format!("the device's write through pin {id} was refused")),
            (_, Some(true)) => c.push(format!("the device wrote X into{at}{whose}")),
            _ => c.push(format!("the device read{at} through pin {id}")),
        }
    }
    // Files new since the step before, and where their pages are.
    let before = mapped(prev, &pnm);
    let pinned: BTreeMap<u64, u64> = pins
        .iter()
        .flat_map(|(id, p)| arr(&p["blocks"]).iter().map(move |b| (u(b), *id)))
        .collect();
    let pinner = |b: u64| {
        pinned
            .get(&b)
            .and_then(|id| pins.get(id))
            .map(|p| u(&p["inode"]))
    };
    let mut fresh = Vec::new();
    let mut moved = Vec::new();
    let mut by_file: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for ((f, i), b) in mapped(state, &nm) {
        if before.get(&(f.clone(), i)) != Some(&b) {
            by_file.entry(f).or_default().push(b);
        }
    }
    let ino_of: BTreeMap<&String, u64> = nm.iter().map(|(i, n)| (n, *i)).collect();
    let mut shared_told = BTreeSet::new();
    for (f, bs) in by_file {
        let b = bs[0];
        let others: Vec<String> = block(state, b)
            .map(|x| owner_names(x, &nm))
            .unwrap_or_default()
            .into_iter()
            .filter(|o| *o != f)
            .collect();
        let is_new = !pnm.values().any(|n| *n == f);
        // Handed a block that a pin (made before this step) holds for another file.
        let theirs = pinner(b).is_some_and(|i| Some(&i) != ino_of.get(&f))
            && prev_pins.contains_key(&pinned[&b]);
        let clause = if theirs {
            format!(
                "{f} is given block {b}, which pin {} still holds",
                pinned[&b]
            )
        } else if !others.is_empty() {
            // One clause per shared block: "A shares block 517 with B and C".
            if !shared_told.insert(b) {
                continue;
            }
            format!("{f} shares block {b} with {}", and_list(&others))
        } else {
            format!("{f} gets a fresh block {b}")
        };
        if is_new {
            fresh.push(clause);
        } else {
            moved.push(clause);
        }
    }
    c.extend(fresh);
    // Blocks freed while pinned: the proxy keeps them.
    for b in arr(&state["blocks"]) {
        if b["deferred"].as_bool() == Some(true) {
            let keep: BTreeSet<String> = arr(&state["proxies"])
                .iter()
                .filter(|x| u(&x["page"]) == u(&b["block"]))
                .map(|x| nm.get(&u(&x["owner"])).cloned().unwrap_or_default())
                .collect();
            let keep: Vec<String> = keep.into_iter().collect();
            c.push(format!(
                "the proxy keeps block {} for {} while the pin lasts (its free is deferred)",
                u(&b["block"]),
                and_list(&keep)
            ));
        }
    }
    // New pins.
    for (id, p) in &pins {
        if prev_pins.contains_key(id) {
            continue;
        }
        let b = arr(&p["blocks"]).first().map(u).unwrap_or(0);
        let via = nm.get(&u(&p["inode"])).cloned().unwrap_or_default();
        let owners = block(state, b)
            .map(|x| owner_names(x, &nm))
            .unwrap_or_default();
        let shared = if owners.len() > 1 {
            format!(", shared by {}", and_list(&owners))
        } else if owners.len() == 1 && owners[0] != via {
            format!(", which {} maps", owners[0])
        } else {
            String::new()
        };
        let kind = if p["write"].as_bool() == Some(true) {
            "writing"
        } else {
            "reading"
        };
        c.push(format!(
            "pin {id} holds block {b} for {kind} through {via}{shared}"
        ));
    }
    // Pins that ended.
    for (id, p) in &prev_pins {
        if pins.contains_key(id) {
            continue;
        }
        let b = arr(&p["blocks"]).first().map(u).unwrap_or(0);
        let now = match block(state, b) {
            Some(x) if x["allocated"].as_bool() == Some(false) => {
                let clean = x["page"].is_null();
                format!(
                    "block {b} is back on the free list{}",
                    if clean { " with a clean page" } else { "" }
                )
            }
            Some(x) if !owner_names(x, &nm).is_empty() => {
                format!("block {b} stays with {}", and_list(&owner_names(x, &nm)))
            }
            _ => format!("block {b} is no longer held"),
        };
        c.push(format!("pin {id} has ended and {now}"));
    }
    // Pages of older files that moved to another block.
    c.extend(moved);
    // Files that lost their pages.
    for f in arr(&state["files"]) {
        let n = nm.get(&u(&f["inode"])).cloned().unwrap_or_default();
        if arr(&f["pages"]).is_empty() && before.keys().any(|(g, _)| *g == n) {
            c.push(format!("{n} has no blocks any more"));
        }
    }
    // Blocks freed at this step (an ended pin says so itself).
    let ended: BTreeSet<u64> = prev_pins
        .iter()
        .filter(|(id, _)| !pins.contains_key(id))
        .flat_map(|(_, p)| arr(&p["blocks"]).iter().map(u))
        .collect();
    for b in arr(&state["blocks"]) {
        let n = u(&b["block"]);
        let was = block(prev, n).and_then(|x| x["allocated"].as_bool());
        if b["allocated"].as_bool() == Some(false) && was == Some(true) && !ended.contains(&n) {
            c.push(format!("block {n} goes back on the free list"));
        }
    }
    for b in arr(&state["blocks"]) {
        if b["poisoned"].as_bool() == Some(true) {
            let told: Vec<String> = arr(&b["notified"])
                .iter()
                .map(|i| nm.get(&u(i)).cloned().unwrap_or_default())
                .collect();
            c.push(format!(
                "block {} is poisoned and the model told {}",
                u(&b["block"]),
                and_list(&told)
            ));
        }
    }
    for d in arr(&state["dirty"]) {
        let to = nm.get(&u(&d["attributed"])).cloned().unwrap_or_default();
        c.push(format!(
            "the device's data in block {} is charged to {to}",
            u(&d["block"])
        ));
    }
    let now_dirty: BTreeSet<u64> = arr(&state["dirty"])
        .iter()
        .map(|d| u(&d["block"]))
        .collect();
    for d in arr(&prev["dirty"]) {
        if !now_dirty.contains(&u(&d["block"])) && block(state, u(&d["block"])).is_some() {
            c.push(format!(
                "the device's data in block {} is written back and no longer charged to anyone",
                u(&d["block"])
            ));
        }
    }
    if c.is_empty() {
        let m = mapped(state, &nm);
        let mut by_file: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        for ((f, _), b) in &m {
            by_file.entry(f.as_str()).or_default().insert(*b);
        }
        let parts: Vec<String> = by_file
            .iter()
            .map(|(f, bs)| {
                let bs: Vec<String> = bs.iter().map(u64::to_string).collect();
                format!("{f} maps block {}", and_list(&bs))
            })
            .collect();
        c.push(if parts.is_empty() {
            "no file maps a block and nothing is pinned".into()
        } else {
            format!("the page model did not change: {}", and_list(&parts))
        });
    }
    c.dedup();
    c.truncate(3);
    let mut s = c.join("; ");
    if let Some(f) = s.get(..1) {
        s = f.to_uppercase() + &s[1..];
    }
    s.push('.');
    s
}

#[cfg(test)]
mod tests {
    use super::sentence;
    use serde_json::{json, Value};

    #[test]
    fn deferred_block_and_fresh_block() {
        let prev = json!({
            "files": [{"inode": 2, "path": "/A", "pages": []}],
            "blocks": [{"block": 517, "allocated": true, "deferred": true, "owners": []}],
            "pins": [{"id": 1, "inode": 2, "index": 0, "blocks": [517], "write": true}],
            "proxies": [{"id": 2, "page": 517, "owner": 2, "index": 0}],
        });
        let mut now = prev.clone();
        now["files"] = json!([{"inode": 2, "path": "/A", "pages": []},
                              {"inode": 3, "path": "/C", "pages": [{"index": 0, "block": 518}]}]);
        now["blocks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"block": 518, "allocated": true, "owners": [[3, 0]]}));
        assert_eq!(
            sentence(&now, &prev, &Value::Null),
            "C gets a fresh block 518; the proxy keeps block 517 for A while the pin \
             lasts (its free is deferred)."
        );
    }

    #[test]
    fn any_json_gives_one_sentence() {
        for v in [Value::Null, json!({}), json!({"files": 1, "pins": [null]})] {
            let s = sentence(&v, &Value::Null, &json!({"pin": 3}));
            assert!(
                s.ends_with('.') && !s.contains('[') && !s.contains('"'),
                "{s}"
            );
        }
    }
}
