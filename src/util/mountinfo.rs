//! Mount tables as /proc/PID/mountinfo gives them: the parser the tools,
//! the image lock and the daemon share. What it reads is information only:
//! nothing here grants anything (ARCHITECTURE.md, "What the daemon trusts").

#![forbid(unsafe_code)]

use std::path::Path;

/// One line of a mountinfo file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountLine {
    pub id: u64,
    pub dev: (u32, u32),
    pub point: String,
    pub fstype: String,
    /// Per-mount options ("rw,nosuid,relatime").
    pub opts: String,
    pub source: String,
    /// Superblock options ("rw,user_id=0,group_id=0,default_permissions").
    pub super_opts: String,
}

/// The lines of a mountinfo file that parse.
pub fn mountinfo_lines(s: &str) -> impl Iterator<Item = MountLine> + '_ {
    s.lines().filter_map(|l| {
        let (a, b) = l.split_once(" - ")?;
        let f: Vec<&str> = a.split(' ').collect();
        let (maj, min) = f.get(2)?.split_once(':')?;
        let t: Vec<&str> = b.split(' ').collect();
        Some(MountLine {
            id: f.first()?.parse().ok()?,
            dev: (maj.parse().ok()?, min.parse().ok()?),
            point: unescape(f.get(4)?),
            fstype: t.first()?.to_string(),
            opts: f.get(5).unwrap_or(&"").to_string(),
            source: unescape(t.get(1).unwrap_or(&"")),
            super_opts: t.get(2).unwrap_or(&"").to_string(),
        })
    })
}

/// This process's mounts.
pub fn self_mounts() -> Vec<MountLine> {
    mounts_of("self")
}

/// The mounts process `pid` ("self" or a number) sees; empty if it is gone.
pub fn mounts_of(pid: &str) -> Vec<MountLine> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    mountinfo_lines(&s).collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The device of the daxlink mount on `dir` as this process sees it now
/// (the last one there: call right after mounting).
pub fn mount_dev(dir: &Path) -> Option<(u32, u32)> {
    let want = dir.canonicalize().ok()?;
    let want = want.to_str()?;
    self_mounts()
        .into_iter()
        .rfind(|m| m.point == want && m.fstype == "fuse.daxlink")
        .map(|m| m.dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_unescape() {
        assert_eq!(unescape("/tmp/a\\040b"), "/tmp/a b");
        let mi = "27 1 0:50 / /tmp/a\\040b rw - fuse.daxlink img rw\n";
        let l: Vec<MountLine> = mountinfo_lines(mi).collect();
        assert_eq!(
            (l[0].id, l[0].dev, l[0].point.as_str()),
            (27, (0, 50), "/tmp/a b")
        );
        assert_eq!(l[0].fstype, "fuse.daxlink");
        assert_eq!((l[0].opts.as_str(), l[0].source.as_str()), ("rw", "img"));
        assert_eq!(l[0].super_opts, "rw");
    }
}
