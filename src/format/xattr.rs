//! The xattr blob (FORMAT.md, Xattr blob): an inode's pointer to it, and its
//! encode and bounds-checked decode.

use super::{
    check_crc, invalid, need, FormatError, InodeRec, Le, BLOCK_SIZE, MAX_NAME, XATTR_MAGIC,
    XATTR_TOTAL_MAX, XATTR_VALUE_MAX,
};

pub type XattrMap = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

pub fn encode_xattrs(m: &XattrMap) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&XATTR_MAGIC.to_le_bytes());
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    for (k, v) in m {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}

impl InodeRec {
    /// The inode's xattr blob pointer, checked on its own (where the blocks
    /// lie is `check::xattr_ptr`'s): None without xattrs; an error when the
    /// four fields do not describe one blob of at most `XATTR_TOTAL_MAX`
    /// bytes filling exactly its blocks.
    pub fn xattr_ptr(&self) -> Result<Option<XattrPtr>, FormatError> {
        const W: &str = "xattr blob pointer";
        let (block, blocks) = (self.xattr_block, self.xattr_blocks as u64);
        let len = self.xattr_len as u64;
        if block == 0 && blocks == 0 && len == 0 && self.xattr_crc == 0 {
            return Ok(None);
        }
        if blocks == 0 || len == 0 {
            return Err(invalid(W, "empty blob with a non-zero pointer"));
        }
        if len > XATTR_TOTAL_MAX as u64 {
            return Err(invalid(
                W,
                format!("blob of {len} bytes exceeds the 1 MiB limit"),
            ));
        }
        if len.div_ceil(BLOCK_SIZE) != blocks {
            return Err(invalid(
                W,
                format!("{len} bytes do not fill {blocks} blocks"),
            ));
        }
        Ok(Some(XattrPtr {
            block,
            blocks,
            len: len as usize,
            crc: self.xattr_crc,
        }))
    }
}

/// Where an inode's xattr blob lies (`InodeRec::xattr_ptr`): `blocks`
/// blocks from `block`, the first `len` bytes used, checksummed by `crc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XattrPtr {
    pub block: u64,
    pub blocks: u64,
    pub len: usize,
    pub crc: u32,
}

/// Decode the blob read at `p` (its `len` bytes): checksum, then entries.
pub fn decode_xattr_blob(b: &[u8], p: &XattrPtr) -> Result<XattrMap, FormatError> {
    need("xattr blob", b, p.len)?;
    let b = &b[..p.len];
    check_crc("xattr blob", b, p.crc)?;
    decode_xattrs(b)
}

/// Decode an xattr blob. Every length read from it is checked against the
/// bytes that remain before it is used (no arithmetic on an untrusted
/// length can overflow), so a hostile blob is a decode error.
pub fn decode_xattrs(b: &[u8]) -> Result<XattrMap, FormatError> {
    const W: &str = "xattr block";
    /// `n` bytes at `p`, if `b` holds them.
    fn take(b: &[u8], p: usize, n: usize) -> Result<&[u8], FormatError> {
        p.checked_add(n)
            .and_then(|end| b.get(p..end))
            .ok_or_else(|| FormatError::Short {
                what: W,
                have: b.len(),
                need: p.saturating_add(n),
            })
    }
    let head = take(b, 0, 8)?;
    if Le::u32(head, 0) != XATTR_MAGIC {
        return Err(FormatError::BadMagic { what: W });
    }
    let n = Le::u32(head, 4);
    let mut p = 8usize;
    let mut m = XattrMap::new();
    for _ in 0..n {
        let e = take(b, p, 6)?;
        let kl = Le::u16(e, 0) as usize;
        let vl = Le::u32(e, 2) as usize;
        if kl == 0 || kl > MAX_NAME {
            return Err(invalid(W, format!("bad name length {kl}")));
        }
        if vl > XATTR_VALUE_MAX {
            return Err(invalid(W, format!("value length {vl} exceeds 64 KiB")));
        }
        let name = take(b, p + 6, kl)?;
        let value = take(b, p + 6 + kl, vl)?;
        if m.insert(name.to_vec(), value.to_vec()).is_some() {
            return Err(invalid(W, "duplicate name"));
        }
        // Within `b`: `take` checked the end of the value.
        p += 6 + kl + vl;
    }
    if p != b.len() {
        return Err(invalid(W, "trailing bytes"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_xattr_lengths_are_decode_errors() {
        let mut m = XattrMap::new();
        m.insert(b"user.a".to_vec(), b"v".to_vec());
        let good = encode_xattrs(&m);
        assert_eq!(decode_xattrs(&good).unwrap(), m);
        for (at, v) in [(10, &u32::MAX.to_le_bytes()[..]), (8, &[0xff, 0xff][..])] {
            let mut b = good.clone();
            b[at..at + v.len()].copy_from_slice(v);
            assert!(decode_xattrs(&b).is_err());
        }
        let mut b = good.clone();
        b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_xattrs(&b), Err(FormatError::Short { .. })));
        // The pointer: an end past u64 is an error, not an overflow.
        let r = InodeRec {
            mode: libc::S_IFREG,
            xattr_block: u64::MAX,
            xattr_blocks: 1,
            xattr_len: 10,
            ..Default::default()
        };
        // (Where its blocks lie is check::xattr_ptr's, tested there.)
        assert!(r.xattr_ptr().unwrap().is_some());
        let r = InodeRec {
            xattr_len: u32::MAX,
            ..r
        };
        assert!(r.xattr_ptr().is_err());
    }
}
