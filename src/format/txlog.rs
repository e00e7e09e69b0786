//! The journal's on-media structures: its header, transactions (entries and
//! commit record) and the check of a transaction's state.

use super::*;

// ---------------------------------------------------------------------------
// Journal
// ---------------------------------------------------------------------------

/// Journal header (first block of the journal): the last applied transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalHdr {
    pub applied_seq: u64,
}

pub const JHDR_SIZE: usize = 32;

impl JournalHdr {
    pub fn encode(&self) -> [u8; JHDR_SIZE] {
        let mut b = [0u8; JHDR_SIZE];
        Le::put32(&mut b, 0, JHDR_MAGIC);
        Le::put32(&mut b, 4, FORMAT_VERSION);
        Le::put64(&mut b, 8, self.applied_seq);
        let c = crc(&b[..JHDR_SIZE - 4]);
        Le::put32(&mut b, JHDR_SIZE - 4, c);
        b
    }
    pub fn decode(b: &[u8]) -> Result<JournalHdr, FormatError> {
        const W: &str = "journal header";
        need(W, b, JHDR_SIZE)?;
        if Le::u32(b, 0) != JHDR_MAGIC {
            return Err(FormatError::BadMagic { what: W });
        }
        // A torn rewrite: applied_seq (bytes 8..16) and the crc (24..32) lie in
        // different 8-byte units, so a crash while the header is rewritten can
        // persist one without the other. The header is only ever rewritten
        // with applied_seq + 1, so a crc that matches the neighbouring number
        // identifies the torn state exactly; the older number is the truth
        // (the newer transaction is committed and its replay is idempotent).
        let stored = Le::u32(b, JHDR_SIZE - 4);
        if crc(&b[..JHDR_SIZE - 4]) != stored && b[16..JHDR_SIZE - 4].iter().all(|x| *x == 0) {
            let s = Le::u64(b, 8);
            for other in [s.wrapping_sub(1), s.wrapping_add(1)] {
                let mut e = JournalHdr { applied_seq: other }.encode();
                e[4..8].copy_from_slice(&b[4..8]);
                let c = crc(&e[..JHDR_SIZE - 4]);
                if c == stored {
                    return Ok(JournalHdr {
                        applied_seq: s.min(other),
                    });
                }
            }
        }
        check_crc(W, &b[..JHDR_SIZE - 4], stored)?;
        if Le::u32(b, 4) != FORMAT_VERSION {
            return Err(FormatError::BadVersion {
                what: W,
                version: Le::u32(b, 4),
            });
        }
        Ok(JournalHdr {
            applied_seq: Le::u64(b, 8),
        })
    }
}

pub const TX_HDR_SIZE: usize = 24;
pub const TX_ENTRY_HDR: usize = 16;
pub const COMMIT_SIZE: usize = 24;

/// One redo entry: bytes to store at a media offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxEntry {
    pub off: u64,
    pub data: Vec<u8>,
}

/// Serialized size of a transaction with these entries.
pub fn tx_size<'a>(entries: impl Iterator<Item = (u64, &'a [u8])>) -> usize {
    TX_HDR_SIZE
        + entries
            .map(|(_, d)| TX_ENTRY_HDR + d.len().div_ceil(8) * 8)
            .sum::<usize>()
        + COMMIT_SIZE
}

/// Encode a transaction: header, entries, commit record (with the crc of everything before it).
pub fn encode_tx<'a>(seq: u64, entries: impl Iterator<Item = (u64, &'a [u8])> + Clone) -> Vec<u8> {
    let n = entries.clone().count();
    let mut out = Vec::with_capacity(tx_size(entries.clone()));
    let mut h = [0u8; TX_HDR_SIZE];
    Le::put32(&mut h, 0, TX_MAGIC);
    Le::put32(&mut h, 4, n as u32);
    Le::put64(&mut h, 8, seq);
    out.extend_from_slice(&h);
    for (off, d) in entries {
        let mut eh = [0u8; TX_ENTRY_HDR];
        Le::put64(&mut eh, 0, off);
        Le::put32(&mut eh, 8, d.len() as u32);
        out.extend_from_slice(&eh);
        out.extend_from_slice(d);
        out.resize(out.len().div_ceil(8) * 8, 0);
    }
    let payload_len = out.len() - TX_HDR_SIZE;
    Le::put64(&mut out, 16, payload_len as u64);
    let c = crc(&out);
    let mut cm = [0u8; COMMIT_SIZE];
    Le::put32(&mut cm, 0, COMMIT_MAGIC);
    Le::put32(&mut cm, 4, c);
    Le::put64(&mut cm, 8, seq);
    let cc = crc(&cm[..16]);
    Le::put32(&mut cm, 16, cc);
    out.extend_from_slice(&cm);
    out
}

/// What the journal area holds after the header.
#[derive(Debug, PartialEq, Eq)]
pub enum TxState {
    /// No transaction with the expected sequence number.
    None,
    /// A transaction whose commit record is missing or whose checksum fails (torn).
    Torn { seq: u64 },
    /// A complete, committed transaction.
    Committed { seq: u64, entries: Vec<TxEntry> },
}

/// The sequence number and payload length of the transaction header at the
/// start of `b`, if `b` holds one (magic checked; nothing else).
pub fn tx_peek(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() < TX_HDR_SIZE || Le::u32(b, 0) != TX_MAGIC {
        return None;
    }
    Some((Le::u64(b, 8), Le::u64(b, 16)))
}

/// Decode the transaction at the start of `area` if it carries sequence `want_seq`.
pub fn decode_tx(area: &[u8], want_seq: u64) -> TxState {
    let payload = match tx_peek(area) {
        Some((seq, payload)) if seq == want_seq => payload,
        _ => return TxState::None,
    };
    let seq = want_seq;
    let n = Le::u32(area, 4) as usize;
    let end = match (TX_HDR_SIZE as u64).checked_add(payload) {
        Some(e)
            if e.checked_add(COMMIT_SIZE as u64)
                .is_some_and(|x| x <= area.len() as u64) =>
        {
            e as usize
        }
        _ => return TxState::Torn { seq },
    };
    let cm = &area[end..end + COMMIT_SIZE];
    if Le::u32(cm, 0) != COMMIT_MAGIC
        || Le::u64(cm, 8) != seq
        || Le::u32(cm, 16) != crc(&cm[..16])
        || Le::u32(cm, 4) != crc(&area[..end])
    {
        return TxState::Torn { seq };
    }
    let mut entries = Vec::with_capacity(n.min(1 << 16));
    let mut p = TX_HDR_SIZE;
    for _ in 0..n {
        if p + TX_ENTRY_HDR > end {
            return TxState::Torn { seq };
        }
        let off = Le::u64(area, p);
        let len = Le::u32(area, p + 8) as usize;
        p += TX_ENTRY_HDR;
        if p + len > end {
            return TxState::Torn { seq };
        }
        entries.push(TxEntry {
            off,
            data: area[p..p + len].to_vec(),
        });
        p += len.div_ceil(8) * 8;
    }
    TxState::Committed { seq, entries }
}
