//! Weight storage in anonymous memory that asks for transparent huge pages: a decode step
//! streams every weight once, and with 4 KiB pages the TLB misses and the prefetcher's stops at
//! page boundaries cost a large share of the memory bandwidth.

/// Bytes copied between hand-backs of the source (see [`WeightBuf::from_bytes`]).
pub const CHUNK: usize = 4 << 20;

/// Size of the shared regions small weights are carved from.
const REGION: usize = 64 << 20;
/// Transparent huge page size on x86-64 Linux.
const HUGE: usize = 2 << 20;
/// Alignment of every buffer (so any block type fits).
const ALIGN: usize = 4096;

/// One anonymous mapping, advised for huge pages, whose usable part starts on a huge-page
/// boundary: a weight smaller than a huge page only gets huge pages when it shares one.
struct Region {
    /// Kept for its lifetime: the bytes are reached through `base` only, so that no reference
    /// ever spans buffers other than the one in hand.
    _map: memmap2::MmapMut,
    /// The first huge-page boundary in the map.
    base: *mut u8,
}

impl Region {
    fn new(len: usize) -> std::io::Result<Self> {
        let map = memmap2::MmapOptions::new().len(len + HUGE).map_anon()?;
        // Advice only: where the kernel has no huge pages the buffer works the same.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        let mut map = map;
        let at = map.as_mut_ptr();
        let start = (at as usize).next_multiple_of(HUGE) - at as usize;
        // SAFETY: start < HUGE, inside the map of len + HUGE bytes.
        Ok(Self { base: unsafe { at.add(start) }, _map: map })
    }
}

/// The region small buffers are being carved from, and how much of it is taken.
static ARENA: std::sync::Mutex<Option<(std::sync::Arc<Region>, usize)>> = std::sync::Mutex::new(None);

/// Zero-initialised bytes, 4 KiB-aligned, in memory that asks for transparent huge pages.
/// Buffers up to a quarter of [`REGION`] are carved one after another from shared regions, so
/// that consecutive weights fill whole huge pages; larger ones get a region of their own. A
/// region is returned to the system when its last buffer is dropped.
pub struct WeightBuf {
    region: std::sync::Arc<Region>,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for WeightBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBuf({} bytes)", self.len)
    }
}

// SAFETY: a buffer is the only owner of its bytes in the region; shared access is read-only
// (`bytes`), writes need `&mut self`. The region itself is only read for its base pointer.
unsafe impl Send for WeightBuf {}
unsafe impl Sync for WeightBuf {}
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl WeightBuf {
    pub fn zeroed(len: usize) -> std::io::Result<Self> {
        let len_aligned = len.max(1).next_multiple_of(ALIGN);
        if len_aligned > REGION / 4 {
            let region = std::sync::Arc::new(Region::new(len_aligned)?);
            return Ok(Self { region, offset: 0, len });
        }
        let mut arena = ARENA.lock().unwrap_or_else(|p| p.into_inner());
        let fits = arena.as_ref().is_some_and(|(_, used)| used + len_aligned <= REGION);
        if !fits {
            *arena = Some((std::sync::Arc::new(Region::new(REGION)?), 0));
        }
        let (region, used) = arena.as_mut().expect("a region is set above");
        let offset = *used;
        *used += len_aligned;
        Ok(Self { region: region.clone(), offset, len })
    }

    /// A copy of `data`, made in stretches of [`CHUNK`] bytes, each handed to `done` once copied.
    pub fn from_bytes(data: &[u8], done: &dyn Fn(&[u8])) -> std::io::Result<Self> {
        let mut b = Self::zeroed(data.len())?;
        for (dst, src) in b.bytes_mut().chunks_mut(CHUNK).zip(data.chunks(CHUNK)) {
            dst.copy_from_slice(src);
            done(src);
        }
        Ok(b)
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: [offset, offset + len) lies inside the region (see `zeroed`) and belongs to this
        // buffer alone; it is only written through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.region.base.add(self.offset), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: [offset, offset + len) lies inside the region's map and belongs to this buffer
        // alone (regions are only ever carved forward), and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.region.base.add(self.offset), self.len) }
    }
}
