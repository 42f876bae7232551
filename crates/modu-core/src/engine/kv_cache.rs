//! Per-layer key/value cache with amortised growth. A sliding-window layer keeps only the keys
//! its next query can still see, so its memory stays bounded by the window.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// Keys and values of one attention layer, [1, n_kv, len, head_dim] each, grown by doubling so
/// decoding does not copy the whole cache per token. Stored in `dtype` (f16 by default, as
/// llama.cpp does: half the memory, and the same rounding as the reference engine).
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// Positions seen (the absolute end).
    len: usize,
    /// Absolute position of the first stored row (> 0 only for windowed caches).
    start: usize,
    /// Attention window: rows older than the window of the next query are dropped.
    window: Option<usize>,
    dtype: DType,
}

impl KvCache {
    pub fn new(dtype: DType) -> Self {
        Self { k: None, v: None, len: 0, start: 0, window: None, dtype }
    }

    /// A cache for a sliding-window layer: holds at most about two windows of rows.
    pub fn windowed(dtype: DType, window: Option<usize>) -> Self {
        Self { window: window.filter(|w| *w > 0), ..Self::new(dtype) }
    }

    /// Absolute position of the first row that `append` returns.
    pub fn start(&self) -> usize {
        self.start
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything after the first `len` positions (the tail of a previous turn) and
    /// returns how many positions are kept: `len`, or 0 when a windowed cache has already dropped
    /// rows that a query at `len` would need (then it starts over).
    pub fn truncate(&mut self, len: usize) -> usize {
        let len = self.len.min(len);
        let first_needed = self.window.map_or(0, |w| (len + 1).saturating_sub(w));
        if first_needed < self.start {
            self.len = 0;
            self.start = 0;
            return 0;
        }
        self.len = len;
        len
    }

    pub fn clear(&mut self) {
        self.k = None;
        self.v = None;
        self.len = 0;
        self.start = 0;
    }

    /// Bytes held by the allocated buffers.
    pub fn allocated_bytes(&self) -> usize {
        [&self.k, &self.v]
            .iter()
            .filter_map(|t| t.as_ref())
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Appends new keys and values and returns views of the stored rows, in the cache's dtype;
    /// the first row is at absolute position [`KvCache::start`].
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = &k.to_dtype(self.dtype)?;
        let v = &v.to_dtype(self.dtype)?;
        let n = k.dim(2)?;
        let stored = self.len - self.start;
        let cap = self.k.as_ref().map(|t| t.dim(2)).transpose()?.unwrap_or(0);
        if stored + n > cap {
            // Rows the first new query can no longer see go first (windowed layers only).
            let keep_from = self.window.map_or(self.start, |w| (self.len + 1).saturating_sub(w).max(self.start));
            let kept = self.len - keep_from;
            let skip = keep_from - self.start;
            // Buffers grow by doubling. A windowed layer's stops at its window plus a quarter of
            // it, so that once full its rows move once every w/4 tokens (a window's copy spread
            // over w/4 steps) while it holds 1.25 windows; a short sequence holds only its rows.
            // Once rows are dropped the sequence has outgrown the window: the buffer takes its
            // full size then, or a buffer of exactly the window would move every token.
            let doubled = (kept + n).max(cap * 2).max(64);
            let new_cap = match self.window.map(|w| w + (w / 4).max(64)) {
                Some(full) if keep_from > self.start => (kept + n).max(full),
                Some(full) => doubled.min(full).max(kept + n),
                None => doubled,
            };
            let (b, h, _, d) = k.dims4()?;
            let move_rows = |old: &Option<Tensor>, like: &Tensor| -> Result<Tensor> {
                let t = Tensor::zeros((b, h, new_cap, d), like.dtype(), like.device())?;
                if let Some(old) = old {
                    if kept > 0 {
                        t.slice_set(&old.narrow(2, skip, kept)?.contiguous()?, 2, 0)?;
                    }
                }
                Ok(t)
            };
            self.k = Some(move_rows(&self.k, k)?);
            self.v = Some(move_rows(&self.v, v)?);
            self.start = keep_from;
        }
        let (kc, vc) = match (&self.k, &self.v) {
            (Some(kc), Some(vc)) => (kc, vc),
            _ => unreachable!("buffers allocated above"),
        };
        let at = self.len - self.start;
        kc.slice_set(&k.contiguous()?, 2, at)?;
        vc.slice_set(&v.contiguous()?, 2, at)?;
        self.len += n;
        let stored = self.len - self.start;
        Ok((kc.narrow(2, 0, stored)?, vc.narrow(2, 0, stored)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    // Catches lost or misplaced rows when the buffer grows or is truncated.
    #[test]
    fn append_grow_truncate_keeps_rows() -> Result<()> {
        let dev = Device::Cpu;
        let mut c = KvCache::new(DType::F32);
        let mut all = Vec::new();
        for step in 0..70 {
            let n = if step == 0 { 5 } else { 1 };
            let k = Tensor::full(step as f32, (1, 2, n, 4), &dev)?;
            let (kk, vv) = c.append(&k, &(k.clone() * 2.0)?)?;
            all.extend(std::iter::repeat(step as f32).take(n));
            assert_eq!(kk.dim(2)?, all.len());
            let col: Vec<f32> = kk.i((0, 1, .., 3))?.to_vec1()?;
            assert_eq!(col, all);
            let vcol: Vec<f32> = vv.i((0, 0, .., 0))?.to_vec1()?;
            assert_eq!(vcol, all.iter().map(|x| x * 2.0).collect::<Vec<_>>());
        }
        c.truncate(3);
        all.truncate(3);
        let (kk, _) = c.append(&Tensor::full(99f32, (1, 2, 1, 4), &dev)?, &Tensor::zeros((1, 2, 1, 4), DType::F32, &dev)?)?;
        all.push(99.0);
        assert_eq!(kk.i((0, 0, .., 0))?.to_vec1::<f32>()?, all);
        Ok(())
    }

    // Window 4: rows outside the next query's window are dropped, memory stays bounded, and every
    // returned row is the one appended at its position.
    #[test]
    fn windowed_cache_keeps_what_queries_need() -> Result<()> {
        let dev = Device::Cpu;
        let mut c = KvCache::windowed(DType::F32, Some(4));
        let mut max_cap = 0;
        for pos in 0..300 {
            let n = if pos % 50 == 0 { 3 } else { 1 };
            let k = Tensor::full(pos as f32, (1, 1, n, 2), &dev)?;
            let before = c.len();
            let (kk, _) = c.append(&k, &k)?;
            let rows: Vec<f32> = kk.i((0, 0, .., 0))?.to_vec1()?;
            // The first new query (at `before`) sees keys before-3..=before: all must be there.
            assert!(c.start() <= before.saturating_sub(3), "pos {pos}: start {} drops needed keys", c.start());
            assert_eq!(rows.len(), c.len() - c.start());
            assert_eq!(*rows.last().unwrap(), pos as f32);
            max_cap = max_cap.max(c.allocated_bytes());
        }
        // Window 4 plus the minimum slack of 64 rows, 2 values of 4 bytes, K and V.
        assert!(max_cap <= (4 + 64) * 2 * 4 * 2, "windowed cache grew to {max_cap} bytes");
        // Rewinding past the dropped rows starts over instead of attending to missing keys.
        let len = c.len();
        assert_eq!(c.truncate(len - 1), len - 1);
        assert_eq!(c.truncate(10), 0);
        assert_eq!(c.len(), 0);
        Ok(())
    }

    // A sequence shorter than the window holds its rows, not a full window's buffer; a long one
    // stops growing at the window plus a quarter.
    #[test]
    fn windowed_cache_grows_only_as_needed() -> Result<()> {
        let dev = Device::Cpu;
        let mut c = KvCache::windowed(DType::F32, Some(512));
        let row_bytes = 2 * 4 * 2; // 2 values of 4 bytes, K and V
        let chunk = Tensor::zeros((1, 1, 128, 2), DType::F32, &dev)?;
        for _ in 0..4 {
            c.append(&chunk, &chunk)?;
        }
        assert_eq!(c.allocated_bytes(), 512 * row_bytes);
        for _ in 0..4 {
            c.append(&chunk, &chunk)?;
        }
        assert_eq!(c.allocated_bytes(), 640 * row_bytes);

        // Decoding a token at a time past the window: the buffer reaches its full size once rows
        // start to drop, and holds it (a buffer of exactly the window would be copied each token).
        let mut c = KvCache::windowed(DType::F32, Some(512));
        let row = Tensor::zeros((1, 1, 1, 2), DType::F32, &dev)?;
        for pos in 0..1500usize {
            c.append(&row, &row)?;
            let want = if pos < 512 { (pos + 1).next_power_of_two().max(64) } else { 640 };
            assert_eq!(c.allocated_bytes(), want * row_bytes, "after position {pos}");
        }
        Ok(())
    }
}
