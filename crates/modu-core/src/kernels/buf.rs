//! Weight storage in anonymous memory that asks for transparent huge pages: a decode step
//! streams every weight once, and with 4 KiB pages the TLB misses and the prefetcher's stops at
//! page boundaries cost a large share of the memory bandwidth.

/// Bytes copied between hand-backs of the source (see [`WeightBuf::from_bytes`]).
pub const CHUNK: usize = 4 << 20;

/// Zero-initialised bytes, page-aligned (so any block type up to 4 KiB alignment fits).
pub struct WeightBuf {
    map: memmap2::MmapMut,
    len: usize,
}

impl std::fmt::Debug for WeightBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBuf({} bytes)", self.len)
    }
}

impl WeightBuf {
    pub fn zeroed(len: usize) -> std::io::Result<Self> {
        let map = memmap2::MmapOptions::new().len(len.max(1)).map_anon()?;
        // Advice only: where the kernel has no huge pages the buffer works the same.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(Self { map, len })
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
        &self.map[..self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }

    /// The bytes as `T`s. `T` must be plain data (integers or arrays of them) with alignment at
    /// most a page; the length must be a multiple of its size.
    pub fn cast<T: Copy>(&self) -> &[T] {
        assert!(std::mem::align_of::<T>() <= 4096 && self.len % std::mem::size_of::<T>() == 0);
        // SAFETY: the map is page-aligned and holds `len` initialised bytes; T is plain data.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr() as *const T, self.len / std::mem::size_of::<T>()) }
    }

    pub fn cast_mut<T: Copy>(&mut self) -> &mut [T] {
        assert!(std::mem::align_of::<T>() <= 4096 && self.len % std::mem::size_of::<T>() == 0);
        // SAFETY: as in `cast`, and the borrow is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr() as *mut T, self.len / std::mem::size_of::<T>()) }
    }
}
