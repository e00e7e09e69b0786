//! The direct-access requests: three ioctls on an open daxlink file and
//! two messages on the daemon's socket. Fixed-size, little-endian payloads;
//! every decode checks its lengths and counts.
//!
//! 1. `HELLO` (on any open file of the mount): may this mount be reached
//!    directly, and how: the protocol version, the mount's nonce, block
//!    size, flush instruction, the image's length, path and identity, and
//!    the name of the daemon's socket (abstract namespace).
//! 2. On the socket, [`Hello`] with the client's own descriptor of the
//!    image, opened read-write (SCM_RIGHTS): the kernel let this process
//!    open the image for writing, which is the whole test of trust. The
//!    daemon answers [`Welcome`] with the control page's descriptor and
//!    the client's slot range.
//! 3. `MAP` (on the open file to be reached): the file's size, its
//!    bucket's generation and its extents from a logical block on, each
//!    marked writable when the file may be stored into in place there; the
//!    daemon records a lease held by that open file.
//! 4. `TOUCH` (on the open file): the file was written directly; the
//!    daemon sets its mtime and ctime as its own overwrite in place does.
//! 5. `PINMAP` (on the open file holding a pin made by daxlink's `PIN`):
//!    the physical blocks the pin holds, fixed when it was made (as
//!    get_user_pages' result), in runs; a direct `mmap` maps them and the
//!    pin lives as long as the mapping. The daemon records a lease held by
//!    that open file (so the process shows as the holder, and kernel-path
//!    opens bypass the page cache while a writable one exists).

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;
/// ioctl type byte ('D', as in daxlink; not claimed by the VFS).
const TYPE: u32 = b'D' as u32;

/// An ioctl number of daxlink's ('D', number `nr`, payload `size` bytes).
pub const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (TYPE << 8) | nr
}
pub const fn ioc_r(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ, nr, size)
}
pub const fn ioc_w(nr: u32, size: usize) -> u32 {
    ioc(IOC_WRITE, nr, size)
}
pub const fn ioc_rw(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, nr, size)
}

/// The protocol version both sides speak.
pub const PROTOCOL: u32 = 1;

pub const SOCKET_MAX: usize = 108;
pub const PATH_MAX: usize = 4096;
const HELLO_HDR: usize = 256;
pub const HELLO_SIZE: usize = HELLO_HDR + PATH_MAX;
pub const HELLO: u32 = ioc_r(0x70, HELLO_SIZE);

pub const MAP_HDR: usize = 64;
pub const MAP_ENTRY: usize = 32;
pub const MAP_MAX: usize = 500;
pub const MAP_SIZE: usize = MAP_HDR + MAP_MAX * MAP_ENTRY;
pub const MAP: u32 = ioc_rw(0x71, MAP_SIZE);

pub const TOUCH_SIZE: usize = 8;
pub const TOUCH: u32 = ioc_w(0x72, TOUCH_SIZE);

/// daxlink's pin_user_pages on an open file (served since before direct
/// access; `PINMAP` reads its blocks): in {off u64, len u64, flags u32
/// (PIN_WRITE | PIN_LONGTERM)}, out {pin id u64 at 24}. The pin ends on
/// UNPIN {pin id u64} or when that open file is released.
pub const PIN_SIZE: usize = 32;
pub const PIN: u32 = ioc_rw(0x50, PIN_SIZE);
pub const UNPIN: u32 = ioc_w(0x51, 8);
pub const PIN_WRITE: u32 = 1;
pub const PIN_LONGTERM: u32 = 2;

pub const PINMAP_HDR: usize = 64;
pub const PINMAP_ENTRY: usize = 16;
pub const PINMAP_MAX: usize = 1000;
pub const PINMAP_SIZE: usize = PINMAP_HDR + PINMAP_MAX * PINMAP_ENTRY;
pub const PINMAP: u32 = ioc_rw(0x73, PINMAP_SIZE);
/// A run of a read pin over a hole: the zero page (no block of the image).
pub const PIN_ZERO: u64 = u64::MAX;
/// PINMAP reply flags: the pin is a write pin.
pub const PINMAP_WRITE: u32 = 1;

/// HELLO flags: clients may store into the image (a read-write mount whose
/// stores are made durable by cache flushes).
pub const HELLO_WRITABLE: u32 = 1;
/// MAP request flags: the client wants to write (needs the file open for writing).
pub const MAP_WANT_WRITE: u32 = 1;
/// MAP reply flags: the lease lets the client write (entries with EXT_WRITE).
pub const MAP_WRITE: u32 = 1;
/// MAP reply flag: another open file holds a writable lease on the file;
/// its direct writes bypass the pages this open may have cached, so drop
/// them (TOUCH_INVAL) before every read through the kernel.
pub const MAP_OTHERS: u32 = 2;
/// Entry flags: the extent is the file's own (unshared, allocated, below
/// EOF) and may be overwritten in place.
pub const EXT_WRITE: u32 = 1;
/// TOUCH flags: set mtime and ctime (through a writable open file only).
pub const TOUCH_MTIME: u64 = 1;
/// TOUCH flag: drop the kernel's cached pages of the file (before a read
/// through the kernel that cached pages may answer, after direct writes).
pub const TOUCH_INVAL: u64 = 2;

#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    Short,
    Version(u32),
    Count(u32),
    Name,
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, WireError> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .ok_or(WireError::Short)
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, WireError> {
    b.get(o..o + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
        .ok_or(WireError::Short)
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// HELLO's reply, owning its names ([`HelloReply`]) or borrowing them from
/// the reply's bytes ([`HelloView`]: the client's setup cannot allocate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloFields<B> {
    pub flags: u32,
    pub nonce: u64,
    pub block_size: u32,
    pub flush: u32,
    pub image_len: u64,
    /// The image's identity: (st_dev, st_ino) of an image file, (0, st_rdev)
    /// of a device.
    pub image_dev: u64,
    pub image_ino: u64,
    /// The daemon's socket in the abstract namespace (without the leading NUL).
    pub socket: B,
    /// The image's absolute path, as the daemon opened it.
    pub path: B,
}

pub type HelloReply = HelloFields<Vec<u8>>;
pub type HelloView<'a> = HelloFields<&'a [u8]>;

impl HelloFields<Vec<u8>> {
    /// Fails (`WireError::Name`) where a name does not fit: the socket's
    /// 1..=SOCKET_MAX bytes, the path's 1..PATH_MAX (room for its NUL), no
    /// NUL inside either.
    pub fn encode(&self, b: &mut [u8; HELLO_SIZE]) -> Result<(), WireError> {
        let (s, p) = (&self.socket[..], &self.path[..]);
        names_fit(s, p)?;
        b.fill(0);
        put32(b, 0, PROTOCOL);
        put32(b, 4, self.flags);
        put64(b, 8, self.nonce);
        put32(b, 16, self.block_size);
        put32(b, 20, self.flush);
        put64(b, 24, self.image_len);
        put64(b, 32, self.image_dev);
        put64(b, 40, self.image_ino);
        put32(b, 48, s.len() as u32);
        put32(b, 52, p.len() as u32);
        b[64..64 + s.len()].copy_from_slice(s);
        b[HELLO_HDR..HELLO_HDR + p.len()].copy_from_slice(p);
        Ok(())
    }

    pub fn decode(b: &[u8]) -> Result<HelloReply, WireError> {
        let v = HelloView::decode(b)?;
        Ok(HelloReply {
            flags: v.flags,
            nonce: v.nonce,
            block_size: v.block_size,
            flush: v.flush,
            image_len: v.image_len,
            image_dev: v.image_dev,
            image_ino: v.image_ino,
            socket: v.socket.to_vec(),
            path: v.path.to_vec(),
        })
    }
}

fn names_fit(socket: &[u8], path: &[u8]) -> Result<(), WireError> {
    let ok = |n: &[u8], max: usize| !n.is_empty() && n.len() <= max && !n.contains(&0);
    if ok(socket, SOCKET_MAX) && ok(path, PATH_MAX - 1) {
        Ok(())
    } else {
        Err(WireError::Name)
    }
}

impl<'a> HelloFields<&'a [u8]> {
    /// The one decoder of HELLO's reply.
    pub fn decode(b: &'a [u8]) -> Result<HelloView<'a>, WireError> {
        if b.len() < HELLO_SIZE {
            return Err(WireError::Short);
        }
        let v = u32_at(b, 0)?;
        if v != PROTOCOL {
            return Err(WireError::Version(v));
        }
        let sl = (u32_at(b, 48)? as usize).min(SOCKET_MAX + 1);
        let pl = (u32_at(b, 52)? as usize).min(PATH_MAX);
        let (socket, path) = (&b[64..64 + sl], &b[HELLO_HDR..HELLO_HDR + pl]);
        names_fit(socket, path)?;
        Ok(HelloView {
            flags: u32_at(b, 4)?,
            nonce: u64_at(b, 8)?,
            block_size: u32_at(b, 16)?,
            flush: u32_at(b, 20)?,
            image_len: u64_at(b, 24)?,
            image_dev: u64_at(b, 32)?,
            image_ino: u64_at(b, 40)?,
            socket,
            path,
        })
    }
}

/// MAP's request: extents from logical block `from` on.
pub fn map_request(b: &mut [u8; MAP_SIZE], from: u64, flags: u32) {
    b.fill(0);
    put64(b, 0, from);
    put32(b, 8, flags);
}

/// (from, flags) of a MAP request.
pub fn decode_map_request(b: &[u8]) -> Result<(u64, u32), WireError> {
    Ok((u64_at(b, 0)?, u32_at(b, 8)?))
}

/// One extent of a MAP reply: `count` blocks from logical block `lblock`
/// at physical block `pblock` (image offset `pblock * block_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub lblock: u64,
    pub pblock: u64,
    pub count: u64,
    pub flags: u32,
}

/// MAP's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapReply {
    pub flags: u32,
    pub size: u64,
    pub gen: u64,
    pub bucket: u32,
    /// First logical block after the last extent listed; `u64::MAX` when
    /// the list is complete.
    pub next: u64,
    pub lease: u64,
    pub extents: Vec<Extent>,
}

impl MapReply {
    pub fn encode(&self, b: &mut [u8; MAP_SIZE]) -> Result<(), WireError> {
        if self.extents.len() > MAP_MAX {
            return Err(WireError::Count(self.extents.len() as u32));
        }
        b.fill(0);
        put32(b, 0, PROTOCOL);
        put32(b, 4, self.flags);
        put64(b, 8, self.size);
        put64(b, 16, self.gen);
        put32(b, 24, self.bucket);
        put32(b, 28, self.extents.len() as u32);
        put64(b, 32, self.next);
        put64(b, 40, self.lease);
        for (i, e) in self.extents.iter().enumerate() {
            let o = MAP_HDR + i * MAP_ENTRY;
            put64(b, o, e.lblock);
            put64(b, o + 8, e.pblock);
            put64(b, o + 16, e.count);
            put32(b, o + 24, e.flags);
        }
        Ok(())
    }

    pub fn decode(b: &[u8]) -> Result<MapReply, WireError> {
        let v = MapView::decode(b)?;
        Ok(MapReply {
            flags: v.flags(),
            size: v.size(),
            gen: v.gen(),
            bucket: v.bucket(),
            next: v.next(),
            lease: v.lease(),
            extents: (0..v.count()).map(|i| v.extent(i)).collect(),
        })
    }
}

/// MAP's reply read in place: the one decoder of MAP (the client reads its
/// windows with it, allocating nothing; [`MapReply::decode`] copies from it).
/// `decode` checked the length and the count, so the accessors cannot fail.
#[derive(Clone, Copy, Debug)]
pub struct MapView<'a> {
    b: &'a [u8],
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from(le32(b, o)) | u64::from(le32(b, o + 4)) << 32
}

impl<'a> MapView<'a> {
    pub fn decode(b: &'a [u8]) -> Result<MapView<'a>, WireError> {
        if b.len() < MAP_HDR {
            return Err(WireError::Short);
        }
        let v = u32_at(b, 0)?;
        if v != PROTOCOL {
            return Err(WireError::Version(v));
        }
        let n = u32_at(b, 28)?;
        if n as usize > MAP_MAX {
            return Err(WireError::Count(n));
        }
        if b.len() < MAP_HDR + n as usize * MAP_ENTRY {
            return Err(WireError::Short);
        }
        Ok(MapView { b })
    }
    pub fn flags(&self) -> u32 {
        le32(self.b, 4)
    }
    pub fn size(&self) -> u64 {
        le64(self.b, 8)
    }
    pub fn gen(&self) -> u64 {
        le64(self.b, 16)
    }
    pub fn bucket(&self) -> u32 {
        le32(self.b, 24)
    }
    pub fn count(&self) -> usize {
        le32(self.b, 28) as usize
    }
    pub fn next(&self) -> u64 {
        le64(self.b, 32)
    }
    pub fn lease(&self) -> u64 {
        le64(self.b, 40)
    }
    /// Extent `i` (< `count()`).
    pub fn extent(&self, i: usize) -> Extent {
        let o = MAP_HDR + i * MAP_ENTRY;
        Extent {
            lblock: le64(self.b, o),
            pblock: le64(self.b, o + 8),
            count: le64(self.b, o + 16),
            flags: le32(self.b, o + 24),
        }
    }

    /// The extent holding logical block `lb`: (physical block of `lb`,
    /// blocks left in the extent from `lb` on, flags). None: a hole, or
    /// past the last extent listed. Extents are in logical order.
    pub fn find(&self, lb: u64) -> Option<(u64, u64, u32)> {
        // The last extent starting at or before lb.
        let (mut lo, mut hi) = (0usize, self.count());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.extent(mid).lblock <= lb {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let e = self.extent(lo.checked_sub(1)?);
        let off = lb - e.lblock;
        if off >= e.count {
            return None;
        }
        Some((e.pblock.checked_add(off)?, e.count - off, e.flags))
    }
}

/// PINMAP's request: the runs of pin `pin` from its page `from` on.
pub fn pinmap_request(b: &mut [u8; PINMAP_SIZE], pin: u64, from: u64) {
    b.fill(0);
    put64(b, 0, pin);
    put64(b, 8, from);
}

/// (pin, from) of a PINMAP request.
pub fn decode_pinmap_request(b: &[u8]) -> Result<(u64, u64), WireError> {
    Ok((u64_at(b, 0)?, u64_at(b, 8)?))
}

/// `count` pages of a pin at physical block `pblock` ([`PIN_ZERO`]: the
/// zero page, for each of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinRun {
    pub pblock: u64,
    pub count: u64,
}

/// PINMAP's reply: the pin covers pages `[index, index + pages)` of the
/// file; `runs` cover its pages from the request's `from` on, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinMapReply {
    pub flags: u32,
    pub index: u64,
    pub pages: u64,
    /// Page of the pin after the last run listed; `u64::MAX` when complete.
    pub next: u64,
    pub lease: u64,
    pub runs: Vec<PinRun>,
}

impl PinMapReply {
    pub fn encode(&self, b: &mut [u8; PINMAP_SIZE]) -> Result<(), WireError> {
        if self.runs.len() > PINMAP_MAX {
            return Err(WireError::Count(self.runs.len() as u32));
        }
        b.fill(0);
        put32(b, 0, PROTOCOL);
        put32(b, 4, self.flags);
        put64(b, 8, self.index);
        put64(b, 16, self.pages);
        put64(b, 24, self.next);
        put64(b, 32, self.lease);
        put32(b, 40, self.runs.len() as u32);
        for (i, r) in self.runs.iter().enumerate() {
            let o = PINMAP_HDR + i * PINMAP_ENTRY;
            put64(b, o, r.pblock);
            put64(b, o + 8, r.count);
        }
        Ok(())
    }

    pub fn decode(b: &[u8]) -> Result<PinMapReply, WireError> {
        let v = u32_at(b, 0)?;
        if v != PROTOCOL {
            return Err(WireError::Version(v));
        }
        let n = u32_at(b, 40)?;
        if n as usize > PINMAP_MAX {
            return Err(WireError::Count(n));
        }
        let mut runs = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let o = PINMAP_HDR + i * PINMAP_ENTRY;
            runs.push(PinRun {
                pblock: u64_at(b, o)?,
                count: u64_at(b, o + 8)?,
            });
        }
        Ok(PinMapReply {
            flags: u32_at(b, 4)?,
            index: u64_at(b, 8)?,
            pages: u64_at(b, 16)?,
            next: u64_at(b, 24)?,
            lease: u64_at(b, 32)?,
            runs,
        })
    }
}

pub const HELLO_MSG: usize = 16;
pub const WELCOME_MSG: usize = 24;

/// Client → daemon on the socket (with the image descriptor attached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub nonce: u64,
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_MSG] {
        let mut b = [0u8; HELLO_MSG];
        put32(&mut b, 0, PROTOCOL);
        put64(&mut b, 8, self.nonce);
        b
    }
    pub fn decode(b: &[u8]) -> Result<Hello, WireError> {
        let v = u32_at(b, 0)?;
        if v != PROTOCOL {
            return Err(WireError::Version(v));
        }
        Ok(Hello {
            nonce: u64_at(b, 8)?,
        })
    }
}

/// Daemon → client: `status` 0 (with the control page's descriptor
/// attached) or an errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub status: i32,
    pub slot_first: u32,
    pub slot_count: u32,
    pub client: u64,
}

impl Welcome {
    pub fn encode(&self) -> [u8; WELCOME_MSG] {
        let mut b = [0u8; WELCOME_MSG];
        put32(&mut b, 0, self.status as u32);
        put32(&mut b, 8, self.slot_first);
        put32(&mut b, 12, self.slot_count);
        put64(&mut b, 16, self.client);
        b
    }
    pub fn decode(b: &[u8]) -> Result<Welcome, WireError> {
        Ok(Welcome {
            status: u32_at(b, 0)? as i32,
            slot_first: u32_at(b, 8)?,
            slot_count: u32_at(b, 12)?,
            client: u64_at(b, 16)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_distinct_and_sized() {
        let all = [HELLO, MAP, TOUCH, PINMAP];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
            assert!(((a >> 16) & 0x3fff) as usize <= 16383);
        }
        assert_eq!((MAP >> 16) & 0x3fff, MAP_SIZE as u32);
    }

    #[test]
    fn hello_round_trips_and_refuses_bad_lengths() {
        let h = HelloReply {
            flags: HELLO_WRITABLE,
            nonce: 0xfeed,
            block_size: 4096,
            flush: 1,
            image_len: 1 << 30,
            image_dev: 3,
            image_ino: 99,
            socket: b"daxlink-direct-1-abc".to_vec(),
            path: b"/dev/shm/x.img".to_vec(),
        };
        let mut b = [0u8; HELLO_SIZE];
        h.encode(&mut b).unwrap();
        let v = HelloView::decode(&b).unwrap();
        assert_eq!((v.socket, v.path), (&h.socket[..], &h.path[..]));
        assert_eq!(HelloReply::decode(&b), Ok(h.clone()));
        // The path and its NUL fit PATH_MAX: PATH_MAX - 1 bytes is the most.
        for (len, ok) in [(PATH_MAX - 1, true), (PATH_MAX, false)] {
            let long = HelloReply {
                path: vec![b'a'; len],
                ..h.clone()
            };
            let mut lb = [0u8; HELLO_SIZE];
            assert_eq!(long.encode(&mut lb).is_ok(), ok, "path of {len}");
            put32(&mut lb, 52, len as u32);
            assert_eq!(HelloView::decode(&lb).is_ok(), ok, "path of {len}");
        }
        let nul = HelloReply {
            path: b"/dev/shm/x\0y".to_vec(),
            ..h.clone()
        };
        assert_eq!(nul.encode(&mut [0u8; HELLO_SIZE]), Err(WireError::Name));
        put32(&mut b, 52, 0);
        assert_eq!(HelloReply::decode(&b), Err(WireError::Name));
        put32(&mut b, 52, PATH_MAX as u32 + 1);
        assert_eq!(HelloReply::decode(&b), Err(WireError::Name));
        put32(&mut b, 0, 9);
        assert_eq!(HelloReply::decode(&b), Err(WireError::Version(9)));
        assert_eq!(HelloReply::decode(&b[..100]), Err(WireError::Short));
    }

    #[test]
    fn map_round_trips_and_refuses_bad_counts() {
        let m = MapReply {
            flags: MAP_WRITE,
            size: 12345,
            gen: 7,
            bucket: 4095,
            next: u64::MAX,
            lease: 3,
            extents: vec![
                Extent {
                    lblock: 0,
                    pblock: 100,
                    count: 3,
                    flags: EXT_WRITE,
                },
                Extent {
                    lblock: 5,
                    pblock: 7,
                    count: 1,
                    flags: 0,
                },
            ],
        };
        let mut b = Box::new([0u8; MAP_SIZE]);
        m.encode(&mut b).unwrap();
        assert_eq!(MapReply::decode(&b[..]), Ok(m));
        let v = MapView::decode(&b[..]).unwrap();
        assert_eq!(v.find(0), Some((100, 3, EXT_WRITE)));
        assert_eq!(v.find(2), Some((102, 1, EXT_WRITE)));
        assert_eq!(v.find(3), None, "a hole");
        assert_eq!(v.find(5), Some((7, 1, 0)));
        assert_eq!(v.find(6), None, "past the last extent");
        // A reply cut before its last extent is refused, not read past.
        assert_eq!(
            MapView::decode(&b[..MAP_HDR + MAP_ENTRY]).err(),
            Some(WireError::Short)
        );
        put32(&mut b[..], 28, MAP_MAX as u32 + 1);
        assert_eq!(
            MapReply::decode(&b[..]),
            Err(WireError::Count(MAP_MAX as u32 + 1))
        );
        let mut r = Box::new([0u8; MAP_SIZE]);
        map_request(&mut r, 42, MAP_WANT_WRITE);
        assert_eq!(decode_map_request(&r[..]), Ok((42, MAP_WANT_WRITE)));
    }

    #[test]
    fn pinmap_round_trips_and_refuses_bad_counts() {
        let m = PinMapReply {
            flags: PINMAP_WRITE,
            index: 3,
            pages: 5,
            next: u64::MAX,
            lease: 9,
            runs: vec![
                PinRun {
                    pblock: 40,
                    count: 2,
                },
                PinRun {
                    pblock: PIN_ZERO,
                    count: 3,
                },
            ],
        };
        let mut b = Box::new([0u8; PINMAP_SIZE]);
        m.encode(&mut b).unwrap();
        assert_eq!(PinMapReply::decode(&b[..]), Ok(m));
        put32(&mut b[..], 40, PINMAP_MAX as u32 + 1);
        assert_eq!(
            PinMapReply::decode(&b[..]),
            Err(WireError::Count(PINMAP_MAX as u32 + 1))
        );
        assert_eq!(PinMapReply::decode(&b[..30]), Err(WireError::Short));
        let mut r = Box::new([0u8; PINMAP_SIZE]);
        pinmap_request(&mut r, 7, 2);
        assert_eq!(decode_pinmap_request(&r[..]), Ok((7, 2)));
        const { assert!(PINMAP_SIZE <= 16383) };
    }

    #[test]
    fn socket_messages_round_trip() {
        let h = Hello { nonce: 5 };
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
        let w = Welcome {
            status: libc::EACCES,
            slot_first: 16,
            slot_count: 16,
            client: 2,
        };
        assert_eq!(Welcome::decode(&w.encode()), Ok(w));
        assert_eq!(Welcome::decode(&[0u8; 3]), Err(WireError::Short));
    }
}
