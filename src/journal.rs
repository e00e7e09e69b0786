//! The metadata journal: atomic multi-structure updates by physical redo logging.
//!
//! A [`Tx`] collects metadata stores (offset, bytes) in DRAM and reads its own
//! writes. [`Journal::commit`] makes them atomic:
//!
//! 1. write the transaction (header, entries) into the journal area, persist;
//! 2. write its commit record (crc over header and entries), persist;
//! 3. store every entry in place, flush them all, fence;
//! 4. write the journal header's `applied_seq = seq`, persist.
//!
//! Recovery ([`Journal::recover`]) replays a committed transaction whose sequence
//! is `applied_seq + 1` (steps 3 and 4 again; replay is idempotent) and ignores a
//! torn one (no valid commit record): that transaction never happened.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::format::{self, JournalHdr, TxState, BLOCK_SIZE};
use crate::media::{Media, MediaError};

/// A set of pending metadata stores.
#[derive(Default, Debug)]
pub struct Tx {
    /// Non-overlapping segments keyed by start offset.
    segs: BTreeMap<u64, Vec<u8>>,
    /// What the entries take in the journal (kept as segments come and go,
    /// so the size is known at any time without walking them).
    entry_bytes: usize,
}

/// Journal bytes of one entry of `len` data bytes.
fn entry_cost(len: usize) -> usize {
    format::TX_ENTRY_HDR + len.div_ceil(8) * 8
}

impl Tx {
    pub fn new() -> Tx {
        Tx::default()
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Queue a store of `data` at `off`; later stores win where they overlap.
    pub fn write(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        // Find segments that overlap or touch [off, end].
        let mut start = off;
        let mut stop = end;
        let keys: Vec<u64> = self
            .segs
            .range(..=end)
            .rev()
            .take_while(|(k, v)| **k + v.len() as u64 >= off)
            .map(|(k, _)| *k)
            .collect();
        if keys.is_empty() {
            self.entry_bytes += entry_cost(data.len());
            self.segs.insert(off, data.to_vec());
            return;
        }
        for k in &keys {
            let l = self.segs[k].len() as u64;
            start = start.min(*k);
            stop = stop.max(k + l);
        }
        let mut merged = vec![0u8; (stop - start) as usize];
        for k in keys {
            let v = self.segs.remove(&k).expect("key present");
            self.entry_bytes -= entry_cost(v.len());
            let s = (k - start) as usize;
            merged[s..s + v.len()].copy_from_slice(&v);
        }
        let s = (off - start) as usize;
        merged[s..s + data.len()].copy_from_slice(data);
        self.entry_bytes += entry_cost(merged.len());
        self.segs.insert(start, merged);
    }

    /// Read `buf.len()` bytes at `off` as they will be after this transaction.
    pub fn read(&self, media: &Media, off: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        media.read(off, buf)?;
        let end = off + buf.len() as u64;
        for (k, v) in self.segs.range(..end).rev() {
            let ke = k + v.len() as u64;
            if ke <= off {
                break;
            }
            let s = off.max(*k);
            let e = end.min(ke);
            buf[(s - off) as usize..(e - off) as usize]
                .copy_from_slice(&v[(s - k) as usize..(e - k) as usize]);
        }
        Ok(())
    }

    pub fn read_vec(&self, media: &Media, off: u64, len: usize) -> Result<Vec<u8>, MediaError> {
        let mut v = vec![0u8; len];
        self.read(media, off, &mut v)?;
        Ok(v)
    }

    pub fn entries(&self) -> impl Iterator<Item = (u64, &[u8])> + Clone {
        self.segs.iter().map(|(k, v)| (*k, v.as_slice()))
    }

    /// Size this transaction takes in the journal.
    pub fn encoded_size(&self) -> usize {
        format::TX_HDR_SIZE + self.entry_bytes + format::COMMIT_SIZE
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("transaction of {size} bytes does not fit the journal ({cap} bytes)")]
    TooLarge { size: usize, cap: usize },
    #[error("journal header: {0}")]
    Format(#[from] format::FormatError),
    #[error("journal entry {off:#x}+{len} lies outside the metadata area")]
    BadEntry { off: u64, len: usize },
    #[error("media: {0}")]
    Media(#[from] MediaError),
}

/// Where the journal lives and what may be written through it.
#[derive(Clone, Copy, Debug)]
pub struct JournalGeometry {
    pub start_block: u64,
    pub blocks: u64,
    /// Journal entries may only target bytes below this offset (metadata area)
    /// or record blocks in the data area; replay checks `< media_len`.
    pub media_len: u64,
}

impl JournalGeometry {
    fn hdr_off(&self) -> u64 {
        self.start_block * BLOCK_SIZE
    }
    fn area_off(&self) -> u64 {
        (self.start_block + 1) * BLOCK_SIZE
    }
    fn area_len(&self) -> usize {
        ((self.blocks - 1) * BLOCK_SIZE) as usize
    }

    /// May a journal entry store `len` bytes at `off`? Only the roots block
    /// (within block 2) or bytes past the journal, inside the filesystem:
    /// never the superblocks or the journal itself. Commit and recovery
    /// refuse any other entry, and fsck judges committed entries by it.
    pub fn entry_ok(&self, off: u64, len: usize) -> bool {
        let lo = (self.start_block + self.blocks) * BLOCK_SIZE;
        match off.checked_add(len as u64) {
            Some(end) if end <= self.media_len => {
                off >= lo || (off >= 2 * BLOCK_SIZE && end <= 3 * BLOCK_SIZE)
            }
            _ => false,
        }
    }
}

/// Outcome of recovery, for logging and fsck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    Clean,
    Replayed { seq: u64, entries: usize },
    DiscardedTorn { seq: u64 },
}

/// The highest `applied_seq` a journal header may hold (see `header`).
pub const SEQ_LIMIT: u64 = 1 << 62;

pub struct Journal {
    geo: JournalGeometry,
    seq: u64,
    /// Test hook: skip given persistence steps (bug injection for the crash harness).
    pub inject: Inject,
}

/// Deliberate bugs for proving the crash harness finds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inject {
    /// Skip the fence between the commit record and the in-place stores.
    pub skip_commit_fence: bool,
    /// Store the entries in place (unflushed) before the body is written.
    pub apply_before_commit: bool,
    /// Skip the flush of the first in-place store of each commit.
    pub skip_apply_flush: bool,
    /// Core hook (fs/tx/ctx.rs `Ctx::slot_free`): zero a freed directory entry
    /// in place, persisted at once, instead of through the transaction.
    pub dirent_in_place: bool,
    /// Core hook (fs/tx/steps.rs, fs/reflink.rs): a change cut into several
    /// transactions writes no intent record, so a crash between its steps
    /// leaves it half done.
    pub no_intent: bool,
    /// Core hook (fs/truncate.rs `Fs::fsync`): fsync leaves the inode's
    /// lazy times in DRAM.
    pub fsync_no_times: bool,
}

impl Journal {
    /// Write an empty journal (mkfs).
    pub fn format(media: &Media, geo: JournalGeometry) -> Result<(), JournalError> {
        Journal::reset(media, geo, 0)
    }

    /// Write an empty journal whose last applied transaction is `applied_seq`
    /// (mkfs with 0; fsck after a bad header).
    pub fn reset(
        media: &Media,
        geo: JournalGeometry,
        applied_seq: u64,
    ) -> Result<(), JournalError> {
        // A transaction is only ever read at the first byte of the area, so
        // zeroing the header block and the area's first block retires
        // whatever an earlier filesystem left there; the rest is leftovers,
        // ignored (mkfs writes two blocks, whatever the journal's size).
        let len = 2 * BLOCK_SIZE;
        media.fill(geo.hdr_off(), len, 0)?;
        media.write_at(geo.hdr_off(), &JournalHdr { applied_seq }.encode())?;
        media.persist(geo.hdr_off(), len)?;
        Ok(())
    }

    /// Read and decode the journal header. A header whose `applied_seq` is
    /// past `SEQ_LIMIT` is refused: no filesystem commits 2^62 transactions,
    /// and the sequence numbers that follow must not run out.
    pub fn header(media: &Media, geo: JournalGeometry) -> Result<JournalHdr, JournalError> {
        let hdr = JournalHdr::decode(&media.read_vec(geo.hdr_off(), format::JHDR_SIZE)?)?;
        if hdr.applied_seq >= SEQ_LIMIT {
            return Err(JournalError::Format(format::FormatError::Invalid {
                what: "journal header",
                detail: "sequence number exhausted".into(),
            }));
        }
        Ok(hdr)
    }

    /// The sequence number of the transaction header at the start of the
    /// area, if there is one (whatever the journal header says).
    pub fn area_seq(media: &Media, geo: JournalGeometry) -> Result<Option<u64>, JournalError> {
        let h = media.read_vec(geo.area_off(), format::TX_HDR_SIZE)?;
        Ok(format::tx_peek(&h).map(|(seq, _)| seq))
    }

    /// The transaction at the start of the area, if it carries `want`. Only
    /// the header is read first: a payload length that does not fit the area
    /// makes the transaction torn before anything else is read.
    pub fn pending(
        media: &Media,
        geo: JournalGeometry,
        want: u64,
    ) -> Result<TxState, JournalError> {
        let h = media.read_vec(geo.area_off(), format::TX_HDR_SIZE)?;
        let payload = match format::tx_peek(&h) {
            Some((seq, payload)) if seq == want => payload,
            _ => return Ok(TxState::None),
        };
        let total = (format::TX_HDR_SIZE as u64)
            .checked_add(payload)
            .and_then(|e| e.checked_add(format::COMMIT_SIZE as u64));
        match total {
            Some(t) if t <= geo.area_len() as u64 => {
                let buf = media.read_vec(geo.area_off(), t as usize)?;
                Ok(format::decode_tx(&buf, want))
            }
            _ => Ok(TxState::Torn { seq: want }),
        }
    }

    /// Discard the transaction at the start of the area: zero its header,
    /// persisted (fsck, for a torn one or one it refuses to replay).
    pub fn discard(media: &Media, geo: JournalGeometry) -> Result<(), MediaError> {
        media.write_persist(geo.area_off(), &[0u8; format::TX_HDR_SIZE])
    }

    /// Inspect the journal without changing anything.
    pub fn inspect(media: &Media, geo: JournalGeometry) -> Result<(u64, TxState), JournalError> {
        let hdr = Journal::header(media, geo)?;
        let state = Journal::pending(media, geo, hdr.applied_seq + 1)?;
        Ok((hdr.applied_seq, state))
    }

    /// Store `entries` in place, flush each, then one fence (the replay of a
    /// committed transaction; fsck's repairs when they cannot be journaled).
    pub fn store_direct<'a>(
        media: &Media,
        entries: impl Iterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), MediaError> {
        for (off, d) in entries {
            media.write_at(off, d)?;
            media.flush(off, d.len() as u64)?;
        }
        media.fence();
        Ok(())
    }

    /// Replay a committed transaction if one is pending (unless the media
    /// is read-only); open the journal.
    pub fn recover(
        media: &Media,
        geo: JournalGeometry,
    ) -> Result<(Journal, Recovery), JournalError> {
        Journal::open(media, geo, !media.read_only())
    }

    /// Open the journal; replay a committed transaction only if `replay`
    /// (a read-only mount, `norecovery`, writes nothing). `Recovery` says
    /// what was pending either way.
    pub fn open(
        media: &Media,
        geo: JournalGeometry,
        replay: bool,
    ) -> Result<(Journal, Recovery), JournalError> {
        let (applied, state) = Journal::inspect(media, geo)?;
        let mut j = Journal {
            geo,
            seq: applied,
            inject: Inject::default(),
        };
        let rec = match state {
            TxState::None => Recovery::Clean,
            TxState::Torn { seq } => Recovery::DiscardedTorn { seq },
            TxState::Committed { seq, entries } => {
                for e in &entries {
                    j.check_entry(e.off, e.data.len())?;
                }
                if replay {
                    Journal::store_direct(media, entries.iter().map(|e| (e.off, &e.data[..])))?;
                    j.seq = seq;
                    j.write_hdr(media)?;
                }
                Recovery::Replayed {
                    seq,
                    entries: entries.len(),
                }
            }
        };
        Ok((j, rec))
    }

    fn check_entry(&self, off: u64, len: usize) -> Result<(), JournalError> {
        if !self.geo.entry_ok(off, len) {
            return Err(JournalError::BadEntry { off, len });
        }
        Ok(())
    }

    fn write_hdr(&self, media: &Media) -> Result<(), JournalError> {
        let h = JournalHdr {
            applied_seq: self.seq,
        }
        .encode();
        media.write_persist(self.geo.hdr_off(), &h)?;
        Ok(())
    }

    pub fn capacity(&self) -> usize {
        self.geo.area_len()
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Make every store of `tx` durable and atomic (see the module comment).
    pub fn commit(&mut self, media: &Media, tx: &Tx) -> Result<(), JournalError> {
        if tx.is_empty() {
            return Ok(());
        }
        for (off, d) in tx.entries() {
            self.check_entry(off, d.len())?;
        }
        let size = tx.encoded_size();
        if size > self.capacity() {
            return Err(JournalError::TooLarge {
                size,
                cap: self.capacity(),
            });
        }
        let seq =
            self.seq
                .checked_add(1)
                .ok_or(JournalError::Format(format::FormatError::Invalid {
                    what: "journal header",
                    detail: "sequence number exhausted".into(),
                }))?;
        let enc = format::encode_tx(seq, tx.entries());
        let commit_at = enc.len() - format::COMMIT_SIZE;
        let area = self.geo.area_off();
        if self.inject.apply_before_commit {
            for (off, d) in tx.entries() {
                media.write_at(off, d)?;
            }
        }
        // 1. body
        media.write_at(area, &enc[..commit_at])?;
        media.persist(area, commit_at as u64)?;
        // 2. commit record
        media.write_at(area + commit_at as u64, &enc[commit_at..])?;
        media.flush(area + commit_at as u64, format::COMMIT_SIZE as u64)?;
        if !self.inject.skip_commit_fence {
            media.fence();
        }
        // 3. apply in place
        for (i, (off, d)) in tx.entries().enumerate() {
            media.write_at(off, d)?;
            if !(self.inject.skip_apply_flush && i == 0) {
                media.flush(off, d.len() as u64)?;
            }
        }
        media.fence();
        // 4. mark applied
        self.seq = seq;
        self.write_hdr(media)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn geo() -> JournalGeometry {
        JournalGeometry {
            start_block: 3,
            blocks: 16,
            media_len: 64 * BLOCK_SIZE,
        }
    }

    proptest! {
        #[test]
        fn tx_overlay_matches_model(ops in prop::collection::vec((0u64..200, prop::collection::vec(any::<u8>(), 1..40)), 1..30)) {
            let m = Media::anonymous(4096).unwrap();
            let mut tx = Tx::new();
            let mut model = vec![0u8; 4096];
            for (off, d) in &ops {
                tx.write(*off, d);
                model[*off as usize..*off as usize + d.len()].copy_from_slice(d);
            }
            prop_assert_eq!(tx.read_vec(&m, 0, 300).unwrap(), model[..300].to_vec());
            // The size kept as stores come is the size of the entries.
            prop_assert_eq!(tx.encoded_size(), format::tx_size(tx.entries()));
            // Segments never overlap.
            let mut last_end = 0u64;
            for (k, v) in tx.entries() {
                prop_assert!(k >= last_end);
                last_end = k + v.len() as u64;
            }
        }
    }

    #[test]
    fn commit_applies_and_recovery_replays() {
        let m = Media::anonymous(64 * BLOCK_SIZE).unwrap();
        Journal::format(&m, geo()).unwrap();
        let (mut j, r) = Journal::recover(&m, geo()).unwrap();
        assert_eq!(r, Recovery::Clean);
        let mut tx = Tx::new();
        tx.write(30 * BLOCK_SIZE, b"hello");
        tx.write(31 * BLOCK_SIZE + 7, b"world");
        j.commit(&m, &tx).unwrap();
        assert_eq!(m.read_vec(30 * BLOCK_SIZE, 5).unwrap(), b"hello");
        // Simulate a crash after step 2: undo the in-place stores and the header.
        m.write_at(30 * BLOCK_SIZE, b"xxxxx").unwrap();
        m.write_at(3 * BLOCK_SIZE, &JournalHdr { applied_seq: 0 }.encode())
            .unwrap();
        let (_, r) = Journal::recover(&m, geo()).unwrap();
        assert_eq!(r, Recovery::Replayed { seq: 1, entries: 2 });
        assert_eq!(m.read_vec(30 * BLOCK_SIZE, 5).unwrap(), b"hello");
        // A torn commit is discarded.
        m.write_at(3 * BLOCK_SIZE, &JournalHdr { applied_seq: 0 }.encode())
            .unwrap();
        m.write_at(4 * BLOCK_SIZE + 30, &[0xff]).unwrap();
        m.write_at(30 * BLOCK_SIZE, b"xxxxx").unwrap();
        let (_, r) = Journal::recover(&m, geo()).unwrap();
        assert_eq!(r, Recovery::DiscardedTorn { seq: 1 });
        assert_eq!(m.read_vec(30 * BLOCK_SIZE, 5).unwrap(), b"xxxxx");
    }

    #[test]
    fn entries_may_not_target_the_journal() {
        let m = Media::anonymous(64 * BLOCK_SIZE).unwrap();
        Journal::format(&m, geo()).unwrap();
        let (mut j, _) = Journal::recover(&m, geo()).unwrap();
        let mut tx = Tx::new();
        tx.write(4 * BLOCK_SIZE, b"x");
        assert!(j.commit(&m, &tx).is_err());
    }
}
