//! Record chains (FORMAT.md, "Record blocks"): the one walker of the linked
//! record blocks of one kind, used by mount (`fs::walk_chain`, which fails at
//! a bad link) and fsck (which reports the bad link and cuts the chain there).
//!
//! A chain is walked from its head in the roots block along each header's
//! `next`, checking that every block lies in `[data_start, total_blocks)`,
//! appears once (no loop), decodes, and has the chain's kind.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use crate::format::{FormatError, RecBlockHdr, RecKind, Superblock, BLOCK_SIZE, REC_HDR};

/// Why a chain stops before its end.
#[derive(Debug)]
pub enum Problem {
    /// The link points outside the data area.
    Outside,
    /// The link points at a block already in the chain.
    Loop,
    /// The block could not be read.
    Unreadable,
    /// The block's header does not decode.
    Header(FormatError),
    /// The block belongs to another chain.
    Kind(RecKind),
}

/// The first bad link of a chain.
#[derive(Debug)]
pub struct BadLink {
    /// The block the link points at.
    pub blk: u64,
    /// The last good block, whose header holds the link (None: the roots block).
    pub prev: Option<u64>,
    pub problem: Problem,
}

/// What a walk found.
#[derive(Debug)]
pub struct Walked {
    /// Good blocks visited.
    pub blocks: u64,
    /// Where the chain broke, if it did.
    pub broken: Option<BadLink>,
}

/// Walk the `kind` chain from `head`. `read(blk)` gives the block's bytes
/// (`Ok(None)`: unreadable, a chain problem; `Err`: stop the walk with that
/// error). `visit(blk, bytes)` is called for every good block, in chain order.
pub fn walk<E>(
    sb: &Superblock,
    kind: RecKind,
    head: u64,
    mut read: impl FnMut(u64) -> Result<Option<Vec<u8>>, E>,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<Walked, E> {
    let mut blk = head;
    let mut prev = None;
    let mut seen = BTreeSet::new();
    let mut blocks = 0;
    while blk != 0 {
        let problem = if blk < sb.data_start || blk >= sb.total_blocks {
            Problem::Outside
        } else if !seen.insert(blk) {
            Problem::Loop
        } else {
            match read(blk)? {
                None => Problem::Unreadable,
                Some(b) => match RecBlockHdr::decode(&b) {
                    Err(e) => Problem::Header(e),
                    Ok(h) if h.kind != kind => Problem::Kind(h.kind),
                    Ok(h) => {
                        visit(blk, &b)?;
                        blocks += 1;
                        prev = Some(blk);
                        blk = h.next;
                        continue;
                    }
                },
            }
        };
        return Ok(Walked {
            blocks,
            broken: Some(BadLink { blk, prev, problem }),
        });
    }
    Ok(Walked {
        blocks,
        broken: None,
    })
}

/// The slots of record block `blk` of `kind` (its bytes `b`): (media offset
/// of the slot, slot bytes), in slot order.
pub fn slots(kind: RecKind, blk: u64, b: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let size = kind.slot_size();
    (0..kind.slots_per_block()).map(move |i| {
        let o = REC_HDR + i * size;
        (blk * BLOCK_SIZE + o as u64, &b[o..o + size])
    })
}
