//! Scenarios S1-S9 of docs/KERNEL.md section 3, each a script of real
//! syscalls and daxlink ioctls on a mounted filesystem; `Run` records every
//! step (and the page model's state after it, see `super::Step`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::{errno, free_blocks, Run, BS};
use crate::tools::client;

fn block(b: u8) -> Vec<u8> {
    vec![b; BS as usize]
}

/// What the device writes: the first bytes of a block it wrote read "XXXX".
pub(super) const MARK: &[u8] = b"XXXX-DMA-FROM-THE-DEVICE-XXXX";

fn has_mark(d: &[u8]) -> bool {
    d.windows(MARK.len()).any(|w| w == MARK)
}

/// "A", "A and B", "A, B and C": a list in plain English.
pub(crate) fn and_list<S: AsRef<str>>(v: &[S]) -> String {
    let v: Vec<&str> = v.iter().map(AsRef::as_ref).collect();
    match v.split_last() {
        None => "nobody".into(),
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// S1/S2: a pinned, unshared block is truncated (or punched) away, then the
/// allocator may hand it to a new file C while the device still writes.
fn s_truncate_reuse(r: &mut Run, punch: bool) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    let fa = r.open_rw("A")?;
    let free0 = free_blocks(&r.m.dir);
    let h = r.pin(&fa, "A", true, false)?;
    r.step(format!("write A; h = pin(A, 0, W)  -> pin {h}"));
    let res = if punch {
        let rc = nix_fallocate(
            &fa,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            BS,
        );
        rc.map(|_| "punch a hole over A's first block")
    } else {
        fa.set_len(0).map(|_| "truncate A to 0")
    };
    match res {
        Ok(what) => r.step(what),
        Err(e) if errno(&e) == libc::EBUSY => {
            r.mark_blocked();
            r.step(format!(
                "{} -> EBUSY (waited for the pin)",
                if punch { "punch A" } else { "truncate A" }
            ));
            r.unpin(&fa, h)?;
            r.step("unpin h");
            // The layout change goes through once nothing pins the block.
            if punch {
                nix_fallocate(
                    &fa,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    0,
                    BS,
                )?;
                r.step("punch A again: done, the block is free");
            } else {
                fa.set_len(0)?;
                r.step("truncate A to 0 again: done, the block is free");
            }
            r.write("C", &block(b'c'))?;
            r.step("create C, write one block: no pin, nothing to protect");
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    r.write("C", &block(b'c'))?;
    r.step("create C, write one block");
    r.dma_write(&fa, h, MARK)?;
    let c = r.read("C")?;
    if has_mark(&c) {
        r.broke(&[1, 2], "dma_write(h, X): C reads X (the block was reused)");
    } else {
        r.step("dma_write(h, X): C unaffected");
    }
    if !punch {
        // Crash with the pin held: the deferred free must not leak.
        r.crash_and_remount()?;
        let free1 = free_blocks(&r.m.dir);
        let leaked = free0.saturating_sub(free1).saturating_sub(1);
        if leaked > 1 {
            r.broke(
                &[1],
                format!("daemon killed with the pin held; remount: {leaked} blocks leaked"),
            );
        } else if r.m.opts.contains("page_model=proxy") {
            r.step("daemon killed with the pin held; remount reclaims the deferred block");
        } else {
            r.step("daemon killed with the pin held; remount");
        }
        if r.read("C")? != block(b'c') {
            r.broke(&[2], "after remount C does not hold its data");
        }
    } else {
        r.unpin(&fa, h)?;
        r.step("unpin h");
    }
    Ok(())
}

fn nix_fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // std has no fallocate; nix's is safe.
    nix::fcntl::fallocate(
        f,
        nix::fcntl::FallocateFlags::from_bits_truncate(mode),
        off as i64,
        len as i64,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

fn s3(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    r.clone("A", "B")?;
    let fb = r.open_rw("B")?;
    let h = r.pin(&fb, "B", false, false)?;
    if r.m.opts.contains("page_model=upstream") {
        r.step("A = a; clone A->B; h = pin(B, 0, R): B unshared first");
        fb.write_all_at(&block(b'b'), 0)?;
        r.step("write(B, 0, b): in place, into B's own pinned block");
    } else {
        r.step("A = a; clone A->B; h = pin(B, 0, R)");
        fb.write_all_at(&block(b'b'), 0)?;
        r.step("write(B, 0, b): B copied on write away from the pinned block");
    }
    match r.dma_write(&fb, h, MARK) {
        Ok(()) => r.step("dma_write(h, X) through the read pin: accepted"),
        Err(e) if errno(&e) == libc::EPERM => {
            r.step("dma_write(h, X) through a read pin: refused (EPERM)")
        }
        Err(e) => return Err(e),
    }
    if has_mark(&r.read("A")?) {
        r.broke(&[2], "A reads X");
    } else {
        r.step("A reads a");
    }
    r.unpin(&fb, h)?;
    r.step("unpin h");
    Ok(())
}

fn s4(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    r.clone("A", "B")?;
    let fb = r.open_rw("B")?;
    let h = r.pin(&fb, "B", true, false)?;
    r.step("A = a; clone A->B; h = pin(B, 0, W)");
    r.dma_write(&fb, h, MARK)?;
    r.step("dma_write(h, X)");
    let (a, b) = (r.read("A")?, r.read("B")?);
    if has_mark(&a) {
        r.broke(&[2, 3], "A reads X too (the write pin did not unshare)");
    } else {
        r.step("A reads a");
    }
    if !has_mark(&b) {
        r.broke(&[2], "B does not read X");
    } else {
        r.step("B reads X");
    }
    r.unpin(&fb, h)?;
    r.step("unpin h");
    Ok(())
}

fn s5(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    r.clone("A", "B")?;
    let fb = r.open_rw("B")?;
    let h = r.pin(&fb, "B", true, false)?;
    r.step("A = a (A maps it first); clone A->B; h = pin(B, 0, W)");
    r.open_rw("A")?.write_all_at(&block(b'2'), 0)?;
    r.step("write(A, 0, a2): A copied on write");
    r.dma_write(&fb, h, MARK)?;
    r.step("dma_write(h, X)");
    r.unpin(&fb, h)?;
    r.step("unpin h (dirty)");
    fb.sync_all()?;
    r.step("fsync(B)");
    if !has_mark(&r.read("B")?) {
        r.broke(&[2], "B does not read X");
    }
    if r.read("A")? != block(b'2') {
        r.broke(&[2], "A lost its own write");
    }
    let o = client::owners(&r.m.p("B"), 0)?;
    let names: Vec<String> = o["owners"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    x["path"]
                        .as_str()
                        .unwrap_or("?")
                        .trim_start_matches('/')
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    r.step(format!("owners(B, 0) -> {}", and_list(&names)));
    Ok(())
}

fn s6(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    r.clone("A", "B")?;
    let fb = r.open_rw("B")?;
    let h = r.pin(&fb, "B", false, false)?;
    r.step(if r.m.opts.contains("page_model=upstream") {
        "A = a; clone A->B; h = pin(B, 0, R): B unshared first"
    } else {
        "A = a; clone A->B; h = pin(B, 0, R)"
    });
    let mut retry_b = false;
    match fb.set_len(0) {
        Ok(()) => r.step("truncate B to 0 (A still maps the block)"),
        Err(e) if errno(&e) == libc::EBUSY => {
            r.mark_blocked();
            retry_b = true;
            r.step("truncate B -> EBUSY (waits for pins taken through any owner)");
        }
        Err(e) => return Err(e),
    }
    let fa = r.open_rw("A")?;
    let mut retry_a = false;
    match fa.set_len(0) {
        Ok(()) => r.step("truncate A to 0"),
        Err(e) if errno(&e) == libc::EBUSY => {
            r.mark_blocked();
            retry_a = true;
            r.step("truncate A -> EBUSY");
        }
        Err(e) => return Err(e),
    }
    r.write("C", &block(b'c'))?;
    r.step("create C, write one block");
    let d = r.dma_read(&fb, h, 64)?;
    if d.starts_with(b"cccc") {
        r.broke(&[1], "dma_read(h) returns C's data (the block was reused)");
    } else {
        r.step("dma_read(h) returns the pinned data");
    }
    r.unpin(&fb, h)?;
    r.step("unpin h");
    // What waited for the pin goes through now.
    let again: Vec<&str> = [("B", retry_b), ("A", retry_a)]
        .iter()
        .filter(|(_, t)| *t)
        .map(|(n, _)| *n)
        .collect();
    if retry_b {
        fb.set_len(0)?;
    }
    if retry_a {
        fa.set_len(0)?;
    }
    if !again.is_empty() {
        r.step(format!("truncate {} to 0 again: done", and_list(&again)));
    }
    Ok(())
}

fn s7(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    r.clone("A", "B")?;
    r.clone("A", "C")?;
    r.step("A = a; clone A->B, A->C (three owners)");
    let (blk, notified, owners) = client::poison(&r.m.p("A"), 0)?;
    r.step(format!(
        "poison the block ({blk}): {notified} of {owners} owners notified"
    ));
    let mut eio = Vec::new();
    let mut silent = Vec::new();
    for n in ["A", "B", "C"] {
        match r.read(n) {
            Err(e) if errno(&e) == libc::EIO => eio.push(n),
            Ok(_) => silent.push(n),
            Err(e) => return Err(e),
        }
    }
    if silent.is_empty() {
        r.step(format!("reads of {} fail with EIO", and_list(&eio)));
    } else if eio.is_empty() {
        r.broke(
            &[5],
            format!(
                "nobody gets EIO; {} read bad data silently",
                and_list(&silent)
            ),
        );
    } else {
        r.broke(
            &[5],
            format!(
                "{} {} EIO; {} read bad data silently",
                and_list(&eio),
                if eio.len() == 1 { "gets" } else { "get" },
                and_list(&silent)
            ),
        );
    }
    Ok(())
}

fn s8(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    let fa = r.open_rw("A")?;
    let h = r.pin(&fa, "A", true, false)?;
    r.step("A = a; h = pin(A, 0, W)");
    match r.clone("A", "B") {
        Ok(_) => r.step("clone A->B"),
        Err(e) if errno(&e) == libc::EBUSY => {
            r.mark_blocked();
            r.step("clone A->B -> EBUSY (break_layouts on both inodes)");
            r.unpin(&fa, h)?;
            r.step("unpin h");
            r.clone("A", "B")?;
            r.step("clone A->B again: done, A and B share the block");
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    r.dma_write(&fa, h, MARK)?;
    r.step("dma_write(h, X)");
    if has_mark(&r.read("B")?) {
        r.broke(&[2], "B reads X");
    } else {
        r.step("B reads a; A reads X");
    }
    r.unpin(&fa, h)?;
    Ok(())
}

fn s9(r: &mut Run) -> io::Result<()> {
    r.write("A", &block(b'a'))?;
    let fa = r.open_rw("A")?;
    let h = match r.pin(&fa, "A", true, true) {
        Ok(h) => h,
        Err(e) if errno(&e) == libc::EOPNOTSUPP => {
            r.mark_refused();
            r.step("h = pin(A, 0, W, long-term) -> EOPNOTSUPP");
            fa.set_len(0)?;
            r.write("C", &block(b'c'))?;
            r.step("truncate A to 0; create C, write one block: no pin, nothing to protect");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    r.step("h = pin(A, 0, W, long-term) (an RDMA registration)");
    fa.set_len(0)?;
    r.write("C", &block(b'c'))?;
    r.step("truncate A to 0; create C, write one block");
    r.dma_write(&fa, h, MARK)?;
    if has_mark(&r.read("C")?) {
        r.broke(&[1, 2], "dma_write(h, X): C reads X");
    } else {
        r.step("dma_write(h, X): C unaffected");
    }
    r.unpin(&fa, h)?;
    r.step("unpin h");
    Ok(())
}

/// One scenario: its name, what it does, the kernel code it reproduces,
/// and, for the report, one clause each on the kernel side of an invariant
/// breaking (`broken`) and of a layout change waiting or a pin refused
/// (`stopped`).
pub struct Scenario {
    pub name: &'static str,
    /// What happens, for a reader who knows nothing of the kernel.
    pub story: &'static str,
    pub what: &'static str,
    pub kernel: &'static str,
    pub broken: &'static str,
    pub stopped: &'static str,
    pub(super) run: fn(&mut Run) -> io::Result<()>,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "S1",
        story: "A device pins A's only block for writing. A is truncated to 0, a new file C is written, and the device writes. Watch whether the pinned block goes back on the free list and becomes C's, and what happens after the daemon is killed with the pin held.",
        what: "truncate a pinned block, then reuse",
        kernel: "pin_user_pages, dax_layout_busy_page, xfs_break_dax_layouts",
        broken: "before dax_layout_busy_page() and xfs_break_dax_layouts(), truncate of a DAX \
                 file freed blocks whose pages a device still held through get_user_pages",
        stopped: "truncate calls xfs_break_dax_layouts(), which waits while \
                  dax_layout_busy_page() finds a pinned page (daxlink gives up with EBUSY)",
        run: |r| s_truncate_reuse(r, false),
    },
    Scenario {
        name: "S2",
        story: "As S1, but the block leaves A through a punched hole instead of a truncate.",
        what: "punch a pinned block, then reuse",
        kernel: "dax_layout_busy_page_range, xfs_break_layouts(BREAK_UNMAP)",
        broken: "fallocate(PUNCH_HOLE) freed a block still pinned by a device, as before \
                 xfs_break_layouts(BREAK_UNMAP) waited for busy DAX pages",
        stopped: "punch hole calls xfs_break_layouts(BREAK_UNMAP), which waits while \
                  dax_layout_busy_page_range() finds a pinned page (daxlink gives up with EBUSY)",
        run: |r| s_truncate_reuse(r, true),
    },
    Scenario {
        name: "S3",
        story: "B is a reflink clone of A, so both map one block. A device pins B's page for reading only, B is overwritten (copy on write moves B to a new block), and then the device writes through its read pin. Watch where the device's bytes land.",
        what: "read pin on a shared block, CoW write, device writes",
        kernel: "FOLL_WRITE, dax_iomap_copy_around",
        broken: "struct page holds one mapping/index, so a block shared by reflink names only \
                 its first owner, and a read pin (no FOLL_WRITE) takes no copy-on-write fault, \
                 so a device writing through it reaches every owner",
        stopped: "",
        run: s3,
    },
    Scenario {
        name: "S4",
        story: "B is a clone of A and a device pins B's shared page for writing, then writes. Watch whether the pin lands on the block A still maps.",
        what: "write pin on a shared block",
        kernel: "dax_insert_entry (IOMAP_F_SHARED), dax_iomap_copy_around",
        broken: "without the FOLL_WRITE unshare of an IOMAP_F_SHARED extent \
                 (dax_iomap_copy_around()), the write pin lands on the block both files share",
        stopped: "",
        run: s4,
    },
    Scenario {
        name: "S5",
        story: "B is a clone of A; a device pins B's page for writing; A is overwritten (copy on write moves A away); the device writes, unpins, and B is fsynced. Watch which file the device's dirty data is charged to.",
        what: "dirty attribution after CoW of the other owner",
        kernel: "unpin_user_pages_dirty_lock, set_page_dirty, page->mapping",
        broken: "unpin_user_pages_dirty_lock() calls set_page_dirty(), which charges the page to \
                 page->mapping: the first owner, not the file the device wrote through",
        stopped: "",
        run: s5,
    },
    Scenario {
        name: "S6",
        story: "B is a clone of A; a device pins B's page for reading. Then B and A are both truncated, a new file C is written, and the device reads through its pin. Watch whether the pinned block can be freed and handed to C.",
        what: "truncate both owners of a pinned shared block",
        kernel: "dax_layout_busy_page, dax_folio_is_shared",
        broken: "truncating the other owner frees the shared block although a pin taken \
                 through B still holds it; page->mapping cannot say B pinned it",
        stopped: "B's truncate waits in dax_layout_busy_page() for the pin; A's goes through, \
                  because daxlink's upstream model unshares a shared block before a read pin \
                  (so that no pin can stall another file's truncate; PAGES.md)",
        run: s6,
    },
    Scenario {
        name: "S7",
        story: "A is cloned to B and C, so three files map one block. The block suffers a memory failure (poison). Watch which of the three files are told, and which read bad data silently.",
        what: "memory failure on a block with three owners",
        kernel: "memory_failure, mf_dax_kill_procs, xfs_dax_notify_failure",
        broken: "memory_failure() found the users of a DAX page through page->mapping/index \
                 alone, so the other reflink owners were never told (fixed later by \
                 xfs_dax_notify_failure() walking the rmap)",
        stopped: "",
        run: s7,
    },
    Scenario {
        name: "S8",
        story: "A device pins A's block for writing, then A is cloned to B, then the device writes. Watch whether B shares the block the device is writing.",
        what: "clone while a write pin is held",
        kernel: "xfs_mmaplock_two_inodes_and_break_dax_layout",
        broken: "a reflink clone shares the block the device is writing, so the new file sees \
                 the device's writes, as before xfs_mmaplock_two_inodes_and_break_dax_layout()",
        stopped: "the clone calls xfs_mmaplock_two_inodes_and_break_dax_layout(), which waits \
                  for the pin on the source (daxlink gives up with EBUSY)",
        run: s8,
    },
    Scenario {
        name: "S9",
        story: "As S1 with a long-term pin (an RDMA memory registration), which is never dropped on request.",
        what: "long-term pin (RDMA) on DAX",
        kernel: "check_vma_flags (FOLL_LONGTERM), get_user_pages_longterm",
        broken: "a long-term pin (an RDMA registration) is never dropped for a truncate, so the \
                 freed block is reused under the device",
        stopped: "check_vma_flags() refuses FOLL_LONGTERM on fsdax mappings, since no truncate \
                  could wait for such a pin",
        run: s9,
    },
];
