//! Superblocks and the journal: pick the superblock copy mount trusts
//! (`fs::newest_superblock`) and plan the rewrite of a bad or diverging copy;
//! check the journal header and its pending transaction (replay a committed
//! one, discard a torn one or one that stores outside the metadata area,
//! reset a bad header). These repairs are direct stores ([`Direct`]): a pass
//! plans them and reads on through the overlay of what they would change,
//! and writes them, before the journaled repairs, only once the whole pass
//! has decided (`Ck::write_direct`). A pass that refuses writes nothing.

use super::{Ck, Out, BS};
use crate::error::FsError;
use crate::format::{Superblock, TxState, SB_SIZE};
use crate::journal::{Journal, JournalError, JournalGeometry};
use crate::media::Media;

/// A store fsck makes outside the journal, planned by a pass and written
/// (in the order planned) only after the pass has decided everything.
#[derive(Debug)]
pub(super) enum Direct {
    /// Superblock copy `copy` (0 = A, 1 = B) gets these bytes.
    Superblock {
        copy: u64,
        bytes: Box<[u8; SB_SIZE]>,
    },
    /// Store the committed transaction's entries in place, then start a
    /// fresh journal (its header unreadable) with `applied` as the last
    /// applied sequence number.
    Reset {
        entries: Vec<(u64, Vec<u8>)>,
        applied: u64,
    },
    /// Zero the transaction header (torn, or storing outside the metadata area).
    Discard,
    /// Replay the committed transaction (`Journal::recover`).
    Replay,
}

/// The transaction at the start of the journal area, if it carries `want`
/// (`Journal::pending`; the area lies inside the image by the geometry check,
/// so reading it does not fail).
fn pending(media: &Media, geo: JournalGeometry, want: u64) -> TxState {
    Journal::pending(media, geo, want).unwrap_or(TxState::None)
}

/// Read both copies and choose the one to trust (the rule mount uses); report
/// a bad or diverging copy and plan its rewrite. An image whose trusted copy
/// carries unknown read-only-compatible features is refused before anything
/// is planned, in check-only mode as in repair mode (as e2fsck): this fsck
/// does not know what those features mean, so it can neither vouch for the
/// image nor repair it, and mount may still mount it read-only.
pub(super) fn superblocks(
    media: &Media,
    out: &mut Out,
) -> Result<(Superblock, Vec<Direct>), String> {
    let copies = crate::fs::superblock_copies(media);
    let best = crate::fs::newest_superblock(&copies, media.len())
        .map(|i| (i, copies[i].clone().expect("valid copy")));
    let Some((bi, best)) = best else {
        if let Some(line) = crate::fs::other_version(media) {
            return Err(line);
        }
        let e = |c: &Result<Superblock, String>| c.as_ref().err().cloned().unwrap_or_default();
        let why = format!(
            "{}: {}; {}: {}",
            crate::fs::superblock_copy_name(0),
            e(&copies[0]),
            crate::fs::superblock_copy_name(1),
            e(&copies[1])
        );
        return match super::geometry::recover(media) {
            Err(e) => Err(format!("no valid superblock ({why}): {e}")),
            Ok((sb, how)) => {
                out.add(
                    "superblock-bad",
                    true,
                    format!("no valid superblock copy ({why}); {how}; both copies rewritten"),
                );
                let plan = (0..2)
                    .map(|copy| Direct::Superblock {
                        copy,
                        bytes: Box::new(sb.encode()),
                    })
                    .collect();
                Ok((sb, plan))
            }
        };
    };
    if best.needs_read_only() {
        return Err(FsError::RoCompat(best.ro_compat).to_string());
    }
    let norm = |s: &Superblock| Superblock {
        generation: 0,
        clean: false,
        mount_count: 0,
        ..s.clone()
    };
    let mut plan = Vec::new();
    for (i, c) in copies.iter().enumerate() {
        let name = crate::fs::superblock_copy_name(i);
        let msg = match c {
            Err(e) => format!(
                "{name}: {e}; rewritten from copy {}",
                if bi == 0 { "A" } else { "B" }
            ),
            Ok(sb) if i != bi && norm(sb) != norm(&best) => {
                format!("{name} disagrees with the other copy on identity or geometry")
            }
            Ok(_) => continue,
        };
        let code = if c.is_err() {
            "superblock-bad"
        } else {
            "superblock-mismatch"
        };
        out.add(code, true, msg);
        plan.push(Direct::Superblock {
            copy: i as u64,
            bytes: Box::new(best.encode()),
        });
        // The copy kept is rewritten too when its bytes are not what it
        // encodes to (e.g. a label that is not UTF-8): both copies then
        // hold the same bytes, and a second run finds them equal.
        let canonical = best.encode();
        let kept = media
            .read_vec(bi as u64 * BS, SB_SIZE)
            .map_err(|e| e.to_string())?;
        if kept[..] != canonical[..] {
            plan.push(Direct::Superblock {
                copy: bi as u64,
                bytes: Box::new(canonical),
            });
        }
    }
    if !best.clean {
        out.note("the filesystem was not cleanly unmounted".into());
    }
    Ok((best, plan))
}

impl Ck<'_> {
    // -- journal ----------------------------------------------------------

    /// Check the journal and plan its repair; the rest of the pass reads
    /// through the overlay of a replay (`view`), in both modes.
    pub(super) fn journal(&mut self) -> Result<(), String> {
        let geo = self.geo;
        // The reason alone (a journal error's text would repeat "journal header").
        let hdr = Journal::header(self.media, geo).map_err(|e| match e {
            JournalError::Format(e) => e.to_string(),
            JournalError::Media(e) => e.to_string(),
            e => e.to_string(),
        });
        let hdr = match hdr {
            Ok(h) => h,
            Err(e) => {
                // Whatever transaction the area holds is the latest one: replay it
                // if it is committed (idempotent), then start a fresh journal.
                let seq = Journal::area_seq(self.media, geo)
                    .ok()
                    .flatten()
                    .filter(|s| *s < crate::journal::SEQ_LIMIT);
                let entries = match seq.map(|s| pending(self.media, geo, s)) {
                    Some(TxState::Committed { entries, .. })
                        if entries.iter().all(|x| geo.entry_ok(x.off, x.data.len())) =>
                    {
                        entries
                    }
                    _ => Vec::new(),
                };
                self.out.add(
                    "journal-header",
                    true,
                    format!(
                        "{e}; journal reset{}",
                        if entries.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " after replaying its committed transaction ({} entries)",
                                entries.len()
                            )
                        }
                    ),
                );
                let applied = if entries.is_empty() {
                    0
                } else {
                    seq.unwrap_or(0)
                };
                for x in &entries {
                    self.view.write(x.off, &x.data);
                }
                self.direct.push(Direct::Reset {
                    entries: entries.into_iter().map(|x| (x.off, x.data)).collect(),
                    applied,
                });
                return Ok(());
            }
        };
        let want = hdr.applied_seq + 1;
        match pending(self.media, geo, want) {
            TxState::None => {}
            TxState::Torn { seq } => {
                self.direct.push(Direct::Discard);
                let cleared = if self.repair { " (cleared)" } else { "" };
                self.out.note(format!(
                    "journal-torn: transaction {seq} was never committed (torn by a crash) and is discarded{cleared}"
                ));
            }
            TxState::Committed { seq, entries } => {
                if let Some(x) = entries.iter().find(|x| !geo.entry_ok(x.off, x.data.len())) {
                    self.out.add(
                        "journal-bad-entry",
                        true,
                        format!(
                            "committed journal transaction {seq} stores {} bytes at {:#x}, outside the metadata area: transaction discarded",
                            x.data.len(),
                            x.off
                        ),
                    );
                    self.direct.push(Direct::Discard);
                    return Ok(());
                }
                self.out.add(
                    "journal-replay",
                    true,
                    format!(
                        "journal needs replay: transaction {seq} ({} entries) is committed but not applied",
                        entries.len()
                    ),
                );
                for x in entries {
                    self.view.write(x.off, &x.data);
                }
                self.direct.push(Direct::Replay);
            }
        }
        Ok(())
    }

    /// Write the direct stores the pass planned, in order: superblock
    /// copies (A before B), then the journal (replay, discard, reset), so
    /// that the journaled repairs that follow find a journal with nothing
    /// pending.
    pub(super) fn write_direct(&mut self) -> Result<(), String> {
        let (m, geo) = (self.media, self.geo);
        for d in std::mem::take(&mut self.direct) {
            match d {
                Direct::Superblock { copy, bytes } => {
                    m.write_persist(copy * BS, &bytes[..]).map_err(|e| {
                        format!(
                            "cannot write {}: {e}",
                            crate::fs::superblock_copy_name(copy as usize)
                        )
                    })?
                }
                Direct::Reset { entries, applied } => {
                    Journal::store_direct(m, entries.iter().map(|(o, d)| (*o, &d[..])))
                        .map_err(|e| format!("journal replay failed: {e}"))?;
                    Journal::reset(m, geo, applied)
                        .map_err(|e| format!("journal reset failed: {e}"))?;
                }
                Direct::Discard => Journal::discard(m, geo)
                    .map_err(|e| format!("cannot discard the journal transaction: {e}"))?,
                Direct::Replay => {
                    Journal::recover(m, geo).map_err(|e| format!("journal replay failed: {e}"))?;
                }
            }
        }
        Ok(())
    }
}
