//! Per-layer key/value cache with amortised growth.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// Keys and values of one attention layer, [1, n_kv, len, head_dim] each, grown by doubling so
/// decoding does not copy the whole cache per token. Stored in `dtype` (f16 by default, as
/// llama.cpp does: half the memory, and the same rounding as the reference engine).
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
    dtype: DType,
}

impl KvCache {
    pub fn new(dtype: DType) -> Self {
        Self { k: None, v: None, len: 0, dtype }
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

    /// Forgets everything after the first `len` positions (the tail of a previous turn).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn clear(&mut self) {
        self.k = None;
        self.v = None;
        self.len = 0;
    }

    /// Bytes held by the allocated buffers.
    pub fn allocated_bytes(&self) -> usize {
        [&self.k, &self.v]
            .iter()
            .filter_map(|t| t.as_ref())
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Appends new keys and values and returns views of the whole cache, in the cache's dtype.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = &k.to_dtype(self.dtype)?;
        let v = &v.to_dtype(self.dtype)?;
        let n = k.dim(2)?;
        let needed = self.len + n;
        let cap = self.k.as_ref().map(|t| t.dim(2)).transpose()?.unwrap_or(0);
        if needed > cap {
            let new_cap = needed.max(cap * 2).max(64);
            let (b, h, _, d) = k.dims4()?;
            let len = self.len;
            let grow = |old: &Option<Tensor>, like: &Tensor| -> Result<Tensor> {
                let t = Tensor::zeros((b, h, new_cap, d), like.dtype(), like.device())?;
                if let Some(old) = old {
                    if len > 0 {
                        t.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                    }
                }
                Ok(t)
            };
            self.k = Some(grow(&self.k, k)?);
            self.v = Some(grow(&self.v, v)?);
        }
        let (kc, vc) = match (&self.k, &self.v) {
            (Some(kc), Some(vc)) => (kc, vc),
            _ => unreachable!("buffers allocated above"),
        };
        kc.slice_set(&k.contiguous()?, 2, self.len)?;
        vc.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((kc.narrow(2, 0, self.len)?, vc.narrow(2, 0, self.len)?))
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
}
