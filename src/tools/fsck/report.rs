//! The report of a check: findings, notes, counts, the exit status (fsck(8)),
//! the summary and advice lines and the JSON document.

use crate::util::progress::plural;

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub code: &'static str,
    pub message: String,
    pub fixed: bool,
    /// The repair plan fixes it (what `-n` tells of `-y`).
    pub fixable: bool,
}

impl Finding {
    /// The line fsck prints for this finding: as found and repaired (`-y`:
    /// "...; corrected"), or, in a check-only run, what a repair would do, in
    /// the conditional as `xfs_repair -n` and `e2fsck -n` put it ("...; would
    /// be corrected"), or that no repair can fix it.
    pub fn line(&self, repair: bool) -> String {
        let m = &self.message;
        let c = self.code;
        match (self.fixed, repair, self.fixable) {
            (true, _, _) => format!("[{c}] {m} (fixed)"),
            (false, true, _) => format!("[{c}] {m} (NOT FIXED)"),
            (false, false, true) => format!("[{c}] {}", would(m)),
            (false, false, false) => format!("[{c}] {m} (cannot be repaired)"),
        }
    }
}

/// "X; corrected" -> "X; would be corrected"; "X; entry removed" -> "X;
/// entry would be removed"; "X: reclaimed" -> "X: would be reclaimed"; "X;
/// a new empty root is made" -> "X; a new empty root would be made". The
/// action is the last clause (after "; ", else after ": "); its verb is the
/// first past participle in it. Without one, "(would be repaired)" is added.
pub fn would(message: &str) -> String {
    const IRREGULAR: &[&str] = &["rewritten", "made", "cut", "rebuilt", "kept", "left"];
    let at = message
        .rfind("; ")
        .or_else(|| message.rfind(": "))
        .map_or(0, |i| i + 2);
    let (head, action) = message.split_at(at);
    let words: Vec<&str> = action.split(' ').collect();
    let participle = words.iter().position(|w| {
        let w = w.trim_end_matches([',', '.']);
        (w.len() > 3 && w.ends_with("ed")) || IRREGULAR.contains(&w)
    });
    match participle {
        Some(i) => {
            let mut out: Vec<&str> = words[..i].to_vec();
            // "... is made" -> "... would be made".
            if out.last() == Some(&"is") {
                out.pop();
            }
            out.push("would be");
            out.extend_from_slice(&words[i..]);
            format!("{head}{}", out.join(" "))
        }
        None => format!("{message} (would be repaired)"),
    }
}

#[cfg(test)]
mod would_tests {
    use super::would;

    #[test]
    fn check_only_findings_read_in_the_conditional() {
        let cases = [
            (
                "inode 2 has link count 5, should be 2; corrected",
                "inode 2 has link count 5, should be 2; would be corrected",
            ),
            (
                "entry \"a\" points at free inode 7; entry removed",
                "entry \"a\" points at free inode 7; entry would be removed",
            ),
            (
                "inode 2 was unlinked while open (orphan record at 0x10): reclaimed",
                "inode 2 was unlinked while open (orphan record at 0x10): would be reclaimed",
            ),
            (
                "no root; a new empty root is made",
                "no root; a new empty root would be made",
            ),
            (
                "copy A: bad; rewritten from copy B",
                "copy A: bad; would be rewritten from copy B",
            ),
            (
                "lost inode 9; moved to /lost+found/#9",
                "lost inode 9; would be moved to /lost+found/#9",
            ),
            (
                "a loop; chain cut there",
                "a loop; chain would be cut there",
            ),
        ];
        for (m, w) in cases {
            assert_eq!(would(m), w);
        }
    }
}

/// What the filesystem holds as the last pass found it (so: after the repair, when repairing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// In-use inodes.
    pub inodes: u64,
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    /// Devices, fifos and sockets.
    pub other: u64,
    pub extents: u64,
    /// Blocks of the data area (what statfs reports as the size).
    pub blocks_total: u64,
    pub blocks_used: u64,
    pub blocks_free: u64,
}

/// The outcome of [`check`].
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Informational lines (a torn transaction, an unclean unmount): no effect on the exit status.
    pub notes: Vec<String>,
    /// Operational failure: the check could not run (exit status 8).
    pub error: Option<String>,
    pub counts: Counts,
    /// Whether repairs were allowed.
    pub repair: bool,
}

impl Report {
    pub(super) fn failed(msg: impl Into<String>, repair: bool) -> Report {
        Report {
            error: Some(msg.into()),
            repair,
            ..Default::default()
        }
    }

    /// fsck(8) exit status: 0 clean, 1 all fixed, 4 left uncorrected, 8 operational error.
    pub fn exit_code(&self) -> i32 {
        if self.error.is_some() {
            8
        } else if self.findings.iter().any(|f| !f.fixed) {
            4
        } else if !self.findings.is_empty() {
            1
        } else {
            0
        }
    }

    /// No findings and no error.
    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.findings.is_empty()
    }

    /// What a check-only run tells of `fsck -y` (the bin prints it after the
    /// summary): None when there is nothing to repair or the check refused.
    pub fn advice(&self, image: &str, prog: &str) -> Option<String> {
        if self.repair || self.error.is_some() || self.findings.is_empty() {
            return None;
        }
        let cannot = self.findings.iter().filter(|f| !f.fixable).count() as u64;
        Some(if cannot == 0 {
            format!("{image}: run {prog} -y to repair")
        } else {
            format!(
                "{image}: run {prog} -y to repair what it can; it cannot repair {}",
                plural(cannot, "problem", "problems")
            )
        })
    }

    /// The distinct finding codes, sorted.
    pub fn codes(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.findings.iter().map(|f| f.code).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The report as the JSON object printed by `fsck-daxlink --json`.
    pub fn to_json(&self, image: &str) -> serde_json::Value {
        serde_json::json!({
            "image": image,
            "clean": self.is_clean(),
            "exit_code": self.exit_code(),
            "error": self.error,
            "findings": self.findings.iter().map(|f| serde_json::json!({
                "code": f.code, "message": f.message, "fixed": f.fixed, "fixable": f.fixable,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
            "inodes": self.counts.inodes,
            "dirs": self.counts.dirs,
            "files": self.counts.files,
            "symlinks": self.counts.symlinks,
            "extents": self.counts.extents,
            "blocks_used": self.counts.blocks_used,
            "blocks_free": self.counts.blocks_free,
            "blocks_total": self.counts.blocks_total,
        })
    }

    /// The one-line summary printed after the findings.
    pub fn summary(&self, image: &str) -> String {
        if let Some(e) = &self.error {
            return format!("{image}: check failed: {e}");
        }
        let c = &self.counts;
        let usage = format!(
            "{}, {} used of {}",
            plural(c.inodes, "inode", "inodes"),
            plural(c.blocks_used, "block", "blocks"),
            c.blocks_total
        );
        if self.findings.is_empty() {
            format!("{image}: clean, {usage}")
        } else {
            let fixed = self.findings.iter().filter(|f| f.fixed).count();
            format!(
                "{image}: {}, {fixed} fixed; {usage}",
                plural(self.findings.len() as u64, "problem", "problems"),
            )
        }
    }
}
