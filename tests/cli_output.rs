//! The tools' output into a pipe whose reader has gone away (`daxlink
//! crashtest --list | head`): the program stops quietly, as a C tool killed
//! by SIGPIPE does (exit status 141, nothing on stderr), instead of
//! panicking.

mod common;

use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};

use common::*;

/// Run `cmd` with its standard output a pipe already closed at the reading
/// end: its first write fails with EPIPE. Returns (exit status, stderr).
fn into_closed_pipe(cmd: &mut Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cmd
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn long_listings_stop_quietly_when_the_reader_goes_away() {
    // The crash harness's workload list (2,348 lines).
    let (code, err) = into_closed_pipe(Command::new(DAXLINK).args(["crashtest", "--list"]));
    assert_eq!((code, err.as_str()), (Some(141), ""), "crashtest --list");

    // The extent table of a file of many extents, and its JSON.
    let img = Image::new("epipe", 64 << 20);
    let m = Mounted::new(&img.path, "");
    let f = std::fs::File::create(m.path("f")).unwrap();
    for i in 0..400u64 {
        f.write_all_at(&[1u8; 4096], 2 * i * 4096).unwrap();
    }
    drop(f);
    for json in [false, true] {
        let mut c = Command::new(DAXLINK);
        c.arg("extents").arg(m.path("f"));
        if json {
            c.arg("--json");
        }
        let (code, err) = into_closed_pipe(&mut c);
        assert_eq!((code, err.as_str()), (Some(141), ""), "extents json={json}");
    }
    // stat (a short table) the same way.
    let (code, err) = into_closed_pipe(Command::new(DAXLINK).arg("stat").arg(m.root()));
    assert_eq!((code, err.as_str()), (Some(141), ""), "stat");
    m.unmount();

    // fsck's report.
    let (code, err) = into_closed_pipe(Command::new(FSCK).arg("-n").arg(&img.path));
    assert_eq!((code, err.as_str()), (Some(141), ""), "fsck -n");
}
