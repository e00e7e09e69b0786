//! The base images workloads start from.
//!
//! - The **small** one (`seq0`, `seq1`, `seq2`): the smallest image mkfs
//!   makes, with directories `A`, `B`, `A/C` and the files `A/foo`, `B/foo`
//!   (see `ops.rs`).
//! - The **big** one (`big/...`): a 6 MiB image with the smallest journal
//!   (16 blocks, so each step of a long operation holds a few dozen extents),
//!   a file of [`BIG_EXTENTS`] one-block extents (`F/frag`, every other block
//!   written), a clone of it (`F/clone`: every extent shared), an empty file
//!   (`F/empty`) and a preallocated filler (`F/fill`) that leaves about 180
//!   blocks free. Its workloads cross every step limit (the journal budget,
//!   `REMAP_BATCH`), so the multi-step paths (punch, zero range, fallocate,
//!   truncate, inode destruction, clone, dedupe, copy_file_range, unshare,
//!   pin) crash between their steps and in their resumption at mount, and
//!   some run out of space half-way (unshare and pin need more blocks than
//!   are free; zero range and fallocate find out before changing anything).

use std::sync::Arc;

use super::direct::Client;
use super::ops::{Falloc, Op, Workload, IMAGE_BLOCKS};
use super::oracle::{capture, Snapshot};
use super::record::{Event, Recorder};
use super::states::Walker;
use crate::format::BLOCK_SIZE;
use crate::fs::make::{mkfs, MkfsOptions};
use crate::fs::{Fs, FsOptions};
use crate::media::Media;

const BS: u64 = BLOCK_SIZE;

/// The big image: 6 MiB.
pub const BIG_BLOCKS: u64 = 1536;
/// Extents of `F/frag`: more than `REMAP_BATCH` = 256, and more than one
/// step of the smallest journal holds whether shared (about 300 a step when
/// dropping a reference) or not (about 600).
pub const BIG_EXTENTS: u64 = 640;
/// Blocks of the filler `F/fill`.
const FILL_BLOCKS: u64 = 660;

/// A base image and its semantic state.
pub struct Base {
    pub image: Vec<u8>,
    pub snap: Snapshot,
}

/// Both base images.
pub struct Bases {
    pub small: Base,
    pub big: Base,
}

impl Bases {
    pub fn make() -> Result<Bases, String> {
        Ok(Bases {
            small: make_base()?,
            big: make_big_base()?,
        })
    }

    /// The base a workload starts from.
    pub fn of(&self, w: &Workload) -> &Base {
        if w.big {
            &self.big
        } else {
            &self.small
        }
    }
}

fn setup_ops() -> Vec<Op> {
    let o = |s: &str| s.to_string();
    vec![
        Op::Mkdir { path: o("A") },
        Op::Mkdir { path: o("B") },
        Op::Mkdir { path: o("A/C") },
        Op::Create { path: o("A/foo") },
        Op::Write {
            path: o("A/foo"),
            off: 0,
            len: 9000,
            overwrite: false,
        },
        Op::SetXattr {
            path: o("A/foo"),
            name: o("user.a"),
            len: 5,
        },
        Op::Create { path: o("B/foo") },
        Op::Write {
            path: o("B/foo"),
            off: 0,
            len: 5000,
            overwrite: false,
        },
    ]
}

fn big_setup_ops() -> Vec<Op> {
    let o = |s: &str| s.to_string();
    let mut ops = vec![Op::Mkdir { path: o("F") }, Op::Create { path: o("F/frag") }];
    for i in 0..BIG_EXTENTS {
        ops.push(Op::Write {
            path: o("F/frag"),
            off: 2 * i * BS,
            len: BS,
            overwrite: false,
        });
    }
    ops.extend([
        Op::Create { path: o("F/clone") },
        Op::Clone {
            src: o("F/frag"),
            dst: o("F/clone"),
            soff: 0,
            doff: 0,
            len: 0,
        },
        Op::Create { path: o("F/empty") },
        Op::Create { path: o("F/fill") },
        Op::Fallocate {
            path: o("F/fill"),
            off: 0,
            len: FILL_BLOCKS * BS,
            mode: Falloc::Alloc,
        },
    ]);
    ops
}

/// Make the small base image (`make_image`).
pub fn make_base() -> Result<Base, String> {
    make_image(IMAGE_BLOCKS, &MkfsOptions::default(), &setup_ops())
}

/// Make the big base image (`make_image`).
pub fn make_big_base() -> Result<Base, String> {
    let opts = MkfsOptions {
        journal_blocks: Some(16),
        inodes: Some(64),
        ..Default::default()
    };
    make_image(BIG_BLOCKS, &opts, &big_setup_ops())
}

/// Make a base image: mkfs, the set-up operations, unmount. The set-up is
/// recorded too, and everything it stored must be durable at its end.
fn make_image(blocks: u64, opts: &MkfsOptions, setup: &[Op]) -> Result<Base, String> {
    let mut media = Media::anonymous(blocks * BS).map_err(|e| e.to_string())?;
    let rec = Arc::new(Recorder::new());
    media.set_observer(Some(rec.clone()));
    mkfs(&media, opts).map_err(|e| format!("mkfs: {e}"))?;
    let fs = Fs::mount(media, FsOptions::default()).map_err(|e| format!("mount: {e}"))?;
    let mut client = Client::attach(&fs, None);
    for op in setup {
        op.apply(&fs, &mut client)
            .map_err(|e| format!("set-up {}: {e}", op.name()))?;
    }
    fs.unmount().map_err(|e| e.to_string())?;
    let Fs { media, .. } = fs;
    let media = Arc::try_unwrap(media).map_err(|_| "media shared".to_string())?;
    let image = media
        .read_vec(0, media.len() as usize)
        .map_err(|e| e.to_string())?;
    let mut w = Walker::new(vec![0u8; image.len()]);
    for ev in rec.take() {
        match ev {
            Event::Store { off, data } => w.store(off, &data),
            Event::Flush { off, len } => w.flush(off, len),
            Event::Fence => w.fence(),
            Event::Op(_) => {}
        }
    }
    if w.in_flight() > 0 || w.durable != image {
        return Err(format!(
            "mkfs, set-up and unmount left {} units not durable",
            w.in_flight()
        ));
    }
    let fs = Fs::mount(
        {
            let m = Media::anonymous(image.len() as u64).map_err(|e| e.to_string())?;
            m.write_at(0, &image).map_err(|e| e.to_string())?;
            m
        },
        FsOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let snap = capture(&fs).map_err(|e| e.to_string())?;
    Ok(Base { image, snap })
}

/// Run `ops` on a scratch copy of the base image (nothing recorded).
pub fn state_after(base: &Base, ops: &[Op]) -> Result<Snapshot, String> {
    let m = Media::anonymous(base.image.len() as u64).map_err(|e| e.to_string())?;
    m.write_at(0, &base.image).map_err(|e| e.to_string())?;
    let fs = Fs::mount(m, FsOptions::default()).map_err(|e| e.to_string())?;
    let mut client = Client::attach(&fs, None);
    for op in ops {
        let _ = op.apply(&fs, &mut client);
    }
    capture(&fs).map_err(|e| e.to_string())
}
