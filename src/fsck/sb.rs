//! Superblocks and the journal: pick the valid superblock copy with the
//! highest generation and rewrite a bad or diverging copy; check the journal
//! header and its pending transaction (replay or overlay a committed one,
//! discard a torn one or one that stores outside the metadata area, reset a
//! bad header). These repairs are direct stores made before anything else.

use super::{Ck, Out, BS};
use crate::format::{Superblock, TxState, SB_SIZE};
use crate::journal::{Journal, JournalError, JournalGeometry};
use crate::media::Media;

/// The transaction at the start of the journal area, if it carries `want`
/// (`Journal::pending`; the area lies inside the image by the geometry check,
/// so reading it does not fail).
fn pending(media: &Media, geo: JournalGeometry, want: u64) -> TxState {
    Journal::pending(media, geo, want).unwrap_or(TxState::None)
}

/// Read both copies; report and (repairing) rewrite a bad or diverging one.
pub(super) fn superblocks(
    media: &Media,
    repair: bool,
    out: &mut Out,
) -> Result<Superblock, String> {
    let copies = crate::fs::superblock_copies(media);
    let best = crate::fs::newest_superblock(&copies, media.len())
        .map(|i| (i, copies[i].clone().expect("valid copy")));
    let Some((bi, best)) = best else {
        if let Some(line) = crate::fs::other_version(media) {
            return Err(line);
        }
        let e = |c: &Result<Superblock, String>| c.as_ref().err().cloned().unwrap_or_default();
        let why = format!("copy A: {}; copy B: {}", e(&copies[0]), e(&copies[1]));
        return match super::geometry::recover(media) {
            Err(e) => Err(format!("no valid superblock ({why}): {e}")),
            Ok((sb, how)) => {
                out.add(
                    "superblock-bad",
                    true,
                    format!("no valid superblock copy ({why}); {how}; both copies rewritten"),
                );
                if repair {
                    for i in 0..2 {
                        media
                            .write_persist(i * BS, &sb.encode())
                            .map_err(|e| format!("cannot write superblock copy {i}: {e}"))?;
                    }
                }
                Ok(sb)
            }
        };
    };
    let norm = |s: &Superblock| Superblock {
        generation: 0,
        clean: false,
        mount_count: 0,
        ..s.clone()
    };
    for (i, c) in copies.iter().enumerate() {
        let name = if i == 0 { "A" } else { "B" };
        let msg = match c {
            Err(e) => format!(
                "superblock copy {name} (block {i}): {e}; rewritten from copy {}",
                if bi == 0 { "A" } else { "B" }
            ),
            Ok(sb) if i != bi && norm(sb) != norm(&best) => {
                format!("superblock copy {name} (block {i}) disagrees with the other copy on identity or geometry")
            }
            Ok(_) => continue,
        };
        let code = if c.is_err() {
            "superblock-bad"
        } else {
            "superblock-mismatch"
        };
        out.add(code, true, msg);
        if repair {
            media
                .write_persist(i as u64 * BS, &best.encode())
                .map_err(|e| format!("cannot rewrite superblock copy {name}: {e}"))?;
            // The copy kept is rewritten too when its bytes are not what it
            // encodes to (e.g. a label that is not UTF-8): both copies then
            // hold the same bytes, and a second run finds them equal.
            let canonical = best.encode();
            let kept = media
                .read_vec(bi as u64 * BS, SB_SIZE)
                .map_err(|e| e.to_string())?;
            if kept[..] != canonical[..] {
                media
                    .write_persist(bi as u64 * BS, &canonical)
                    .map_err(|e| format!("cannot rewrite the superblock copy kept: {e}"))?;
            }
        }
    }
    if best.needs_read_only() {
        if repair {
            return Err(format!(
                "unknown read-only-compatible features {:#x}: this fsck cannot repair the filesystem",
                best.ro_compat
            ));
        }
        out.note(format!(
            "unknown read-only-compatible features {:#x}: checked as format v2",
            best.ro_compat
        ));
    }
    if !best.clean {
        out.note("the filesystem was not cleanly unmounted".into());
    }
    Ok(best)
}

impl Ck<'_> {
    // -- journal ----------------------------------------------------------

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
                if self.repair {
                    let m = self.media;
                    Journal::store_direct(m, entries.iter().map(|x| (x.off, &x.data[..])))
                        .map_err(|e| format!("journal replay failed: {e}"))?;
                    let applied = if entries.is_empty() {
                        0
                    } else {
                        seq.unwrap_or(0)
                    };
                    Journal::reset(m, geo, applied)
                        .map_err(|e| format!("journal reset failed: {e}"))?;
                } else {
                    for x in entries {
                        self.view.write(x.off, &x.data);
                    }
                }
                return Ok(());
            }
        };
        let want = hdr.applied_seq + 1;
        match pending(self.media, geo, want) {
            TxState::None => {}
            TxState::Torn { seq } => {
                let cleared = if self.repair {
                    Journal::discard(self.media, geo)
                        .map_err(|e| format!("cannot clear the torn transaction: {e}"))?;
                    " (cleared)"
                } else {
                    ""
                };
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
                    if self.repair {
                        Journal::discard(self.media, geo)
                            .map_err(|e| format!("cannot discard the transaction: {e}"))?;
                    }
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
                if self.repair {
                    Journal::recover(self.media, geo)
                        .map_err(|e| format!("journal replay failed: {e}"))?;
                } else {
                    for x in entries {
                        self.view.write(x.off, &x.data);
                    }
                }
            }
        }
        Ok(())
    }
}
