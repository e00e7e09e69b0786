//! SIGKILL ends a long operation: between its steps, an operation whose
//! caller has a fatal signal pending stops (EINTR) with what it did so far
//! committed, so a killed process is gone at once and the worker and the
//! locks it held are free again, instead of running on for the whole call.

use std::fs::{self, File};
use std::os::unix::fs::{chown, FileExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const NOBODY: u32 = 65534;
/// Each step boundary sleeps this long (DAXLINK_FAULT_INJECT=slow-step).
const STEP_MS: u64 = 400;
/// Source extents: every other block written, so none merge. A clone
/// remaps 256 extents a step: 32 steps, about 13 s with the hook.
const EXTENTS: u64 = 8192;

/// nobody clones a file of 8,192 extents (32 steps of 400 ms) and is
/// killed 1.5 s in. The killed process must be gone within 3 s (run to
/// its end, the clone would hold it about 11 s more), nobody's next
/// clone into the same file (which needs the lock the first one held)
/// must be done within 3 s more, and the image must be clean.
#[test]
fn sigkill_ends_a_long_clone_between_steps() {
    let img = Image::new("killed", 128 << 20);
    let m = Mounted::with_env(
        &img.path,
        "allow_other",
        &[("DAXLINK_FAULT_INJECT", &format!("slow-step:{STEP_MS}"))],
    );
    fs::set_permissions(m.root(), fs::Permissions::from_mode(0o777)).unwrap();
    let src = File::create(m.path("src")).unwrap();
    for i in 0..EXTENTS {
        src.write_all_at(&[(i % 251) as u8 + 1; 4096], 2 * i * 4096)
            .unwrap();
    }
    src.sync_all().unwrap();
    drop(src);
    fs::write(m.path("dst"), b"").unwrap();
    fs::write(m.path("small"), [7u8; 4096]).unwrap();
    for f in ["src", "dst", "small"] {
        chown(m.path(f), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let root = m.root().display().to_string();
    let mut clone = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(DAXLINK)
        .args(["reflink", &format!("{root}/src"), &format!("{root}/dst")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("setpriv");
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(st) = clone.try_wait().unwrap() {
        let o = crate::nobody(&format!("{DAXLINK} reflink {root}/src {root}/dst"));
        panic!("the clone ended within 1.5 s ({st}): nothing to interrupt; again: {o:?}");
    }
    clone.kill().unwrap();
    let t = Instant::now();
    clone.wait().unwrap();
    let gone = t.elapsed();
    let t = Instant::now();
    let o = crate::nobody(&format!("{DAXLINK} reflink {root}/small {root}/dst"));
    let next = t.elapsed();
    eprintln!("killed clone gone after {gone:?}; the next clone took {next:?}");
    assert_eq!(o.rc, 0, "nobody's next clone: {o:?}");
    assert!(
        gone < Duration::from_secs(3),
        "the killed clone's process lived on {gone:?}: its clone ran on"
    );
    assert!(
        next < Duration::from_secs(3),
        "nobody's next clone waited {next:?} behind the killed one"
    );
    assert_eq!(fs::read(m.path("dst")).unwrap()[..4096], [7u8; 4096]);
    m.unmount();
    fsck_clean(&img.path);
}
