//! Attention of a block of query rows over a KV cache, fused: scores, causal and window masks,
//! softmax and the weighted sum of values run tile by tile with an online softmax, so no
//! [q_len, kv_len] score matrix is ever stored. Work items are (query head, block of query rows),
//! shared out on the kernels' pool. f32 throughout; any head size.
//!
//! The tile products are written as fixed-width array loops that the compiler turns into AVX2
//! fused multiply-adds in the `avx2` instantiation; the same code without the target feature is
//! the portable path.

/// Query rows per work item.
const ROWS_PER_ITEM: usize = 8;
/// Keys per softmax step.
const KEYS_PER_STEP: usize = 64;
/// Keys (in scores) and value columns (in the weighted sum) per register tile.
const LANES: usize = 16;

/// Shapes and positions of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub n_head: usize,
    pub n_kv: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
    /// Position of the first query row.
    pub offset: usize,
    /// Position of the first cached key.
    pub k_start: usize,
    /// A query at position p sees keys at positions p - window < k <= p.
    pub window: Option<usize>,
    pub scale: f32,
}

impl Shape {
    /// The keys (indices into the cache) that query row `i` sees, as start..end.
    fn keys(&self, i: usize) -> std::ops::Range<usize> {
        let pos = self.offset + i;
        let first = self.window.map_or(0, |w| (pos + 1).saturating_sub(w)).max(self.k_start) - self.k_start;
        let end = (pos + 1).saturating_sub(self.k_start).min(self.kv_len);
        first..end.max(first)
    }
}

/// `q` [n_head, q_len, hd], `k` and `v` [n_kv, kv_len, hd] → `out` [q_len, n_head, hd].
/// A row that sees no key gets zeros. `parallel`: share the work out on the pool (never from
/// inside a pool task).
pub fn attend(q: &[f32], k: &[f32], v: &[f32], s: &Shape, out: &mut [f32], parallel: bool) {
    let Shape { n_head, n_kv, q_len, kv_len, head_dim: hd, .. } = *s;
    assert!(n_kv > 0 && n_head % n_kv == 0, "query heads must be a multiple of KV heads");
    assert_eq!(q.len(), n_head * q_len * hd, "query length");
    assert_eq!(k.len(), n_kv * kv_len * hd, "key length");
    assert_eq!(v.len(), n_kv * kv_len * hd, "value length");
    assert_eq!(out.len(), q_len * n_head * hd, "output length");
    let (kt, stride) = transpose_keys(k, n_kv, kv_len, hd);
    let blocks = q_len.div_ceil(ROWS_PER_ITEM);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let simd = super::has_avx2();
    let run = |items: std::ops::Range<usize>| {
        let mut scratch = Scratch::new(hd);
        for item in items {
            let (h, b) = (item / blocks, item % blocks);
            let rows = b * ROWS_PER_ITEM..q_len.min((b + 1) * ROWS_PER_ITEM);
            let kvh = h / (n_head / n_kv);
            let kt_h = &kt[kvh * hd * stride..][..hd * stride];
            let v_h = &v[kvh * kv_len * hd..][..kv_len * hd];
            let q_h = &q[h * q_len * hd..][..q_len * hd];
            let job = Job { s, q: q_h, kt: kt_h, stride, v: v_h, head: h, rows, out: out_ptr };
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: the CPU has AVX2 and FMA (has_avx2).
                unsafe { job.run_avx2(&mut scratch) };
                continue;
            }
            let _ = simd;
            job.run(&mut scratch);
        }
    };
    let items = n_head * blocks;
    if parallel && items > 1 {
        candle_core::utils::barrier_pool().execute_chunked(items, run);
    } else {
        run(0..items);
    }
}

/// Keys [n_kv, kv_len, hd] transposed per KV head to [hd][stride], zero-padded so that a tile
/// of LANES keys starting anywhere in range stays inside the buffer; returns them and the stride.
fn transpose_keys(k: &[f32], n_kv: usize, kv_len: usize, hd: usize) -> (Vec<f32>, usize) {
    let stride = kv_len.div_ceil(LANES) * LANES + LANES;
    let mut kt = vec![0f32; n_kv * hd * stride];
    for h in 0..n_kv {
        for j in 0..kv_len {
            let row = &k[(h * kv_len + j) * hd..][..hd];
            for (d, &x) in row.iter().enumerate() {
                kt[(h * hd + d) * stride + j] = x;
            }
        }
    }
    (kt, stride)
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every work item writes only its own (row, head) slices of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Per-thread buffers: scores of a step and the running state of each row.
struct Scratch {
    scores: Vec<f32>,
    acc: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

impl Scratch {
    fn new(hd: usize) -> Self {
        Self {
            scores: vec![0.0; ROWS_PER_ITEM * (KEYS_PER_STEP + LANES)],
            acc: vec![0.0; ROWS_PER_ITEM * hd],
            max: vec![0.0; ROWS_PER_ITEM],
            sum: vec![0.0; ROWS_PER_ITEM],
        }
    }
}

struct Job<'a> {
    s: &'a Shape,
    q: &'a [f32],
    kt: &'a [f32],
    stride: usize,
    v: &'a [f32],
    head: usize,
    rows: std::ops::Range<usize>,
    out: OutPtr,
}

impl Job<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, scratch: &mut Scratch) {
        self.run_inline(scratch)
    }

    fn run(&self, scratch: &mut Scratch) {
        self.run_inline(scratch)
    }

    #[inline(always)]
    fn run_inline(&self, sc: &mut Scratch) {
        let s = self.s;
        let hd = s.head_dim;
        let (r0, nr) = (self.rows.start, self.rows.len());
        let span = KEYS_PER_STEP + LANES;
        sc.acc[..nr * hd].fill(0.0);
        sc.max[..nr].fill(f32::NEG_INFINITY);
        sc.sum[..nr].fill(0.0);
        let ranges: Vec<std::ops::Range<usize>> = self.rows.clone().map(|i| s.keys(i)).collect();
        let seen = ranges.iter().filter(|r| !r.is_empty());
        let lo = seen.clone().map(|r| r.start).min().unwrap_or(0);
        let hi = seen.map(|r| r.end).max().unwrap_or(0);
        // Steps start at multiples of KEYS_PER_STEP from the first cached key, as ggml's tiles do.
        let mut j0 = lo / KEYS_PER_STEP * KEYS_PER_STEP;
        while j0 < hi {
            let j1 = hi.min(j0 + KEYS_PER_STEP);
            let nk = (j1 - j0).div_ceil(LANES) * LANES;
            // Scores, four query rows at a time.
            let mut r = 0;
            while r < nr {
                let take = (nr - r).min(4);
                match take {
                    4 => scores::<4>(self.q, r0 + r, hd, self.kt, self.stride, j0, nk, &mut sc.scores[r * span..]),
                    3 => scores::<3>(self.q, r0 + r, hd, self.kt, self.stride, j0, nk, &mut sc.scores[r * span..]),
                    2 => scores::<2>(self.q, r0 + r, hd, self.kt, self.stride, j0, nk, &mut sc.scores[r * span..]),
                    _ => scores::<1>(self.q, r0 + r, hd, self.kt, self.stride, j0, nk, &mut sc.scores[r * span..]),
                }
                r += take;
            }
            // Mask, then the online softmax: rescale what was summed so far to the new maximum.
            for (i, keys) in ranges.iter().enumerate() {
                let row = &mut sc.scores[i * span..][..nk];
                let mut m = f32::NEG_INFINITY;
                for (jj, x) in row.iter_mut().enumerate() {
                    let j = j0 + jj;
                    if j < keys.start || j >= keys.end || j >= j1 {
                        *x = f32::NEG_INFINITY;
                    } else {
                        *x *= s.scale;
                        m = m.max(*x);
                    }
                }
                if m == f32::NEG_INFINITY {
                    row.fill(0.0);
                    continue;
                }
                let old = sc.max[i];
                if m > old {
                    let corr = (old - m).exp();
                    sc.sum[i] *= corr;
                    sc.acc[i * hd..][..hd].iter_mut().for_each(|a| *a *= corr);
                    sc.max[i] = m;
                }
                let m = sc.max[i];
                // Eight lanes at a time, each group's sum reduced as ggml's AVX2 softmax reduces
                // it, the groups added in f64.
                let mut sum = 0f64;
                for g in row.chunks_exact_mut(8) {
                    for x in g.iter_mut() {
                        *x = exp(*x - m);
                    }
                    let l: [f32; 4] = std::array::from_fn(|t| g[t + 4] + g[t]);
                    sum += ((l[0] + l[2]) + (l[1] + l[3])) as f64;
                }
                sc.sum[i] = (sc.sum[i] as f64 + sum) as f32;
            }
            // acc += P · V over the keys j0..j1.
            let mut r = 0;
            while r < nr {
                let take = (nr - r).min(4);
                let (p, acc) = (&sc.scores[r * span..], &mut sc.acc[r * hd..]);
                match take {
                    4 => weighted::<4>(p, span, self.v, hd, j0, j1, acc),
                    3 => weighted::<3>(p, span, self.v, hd, j0, j1, acc),
                    2 => weighted::<2>(p, span, self.v, hd, j0, j1, acc),
                    _ => weighted::<1>(p, span, self.v, hd, j0, j1, acc),
                }
                r += take;
            }
            j0 = j1;
        }
        for i in 0..nr {
            let inv = if sc.sum[i] > 0.0 { 1.0 / sc.sum[i] } else { 0.0 };
            let row = (r0 + i) * s.n_head + self.head;
            // SAFETY: (row r0 + i, head) belongs to this work item alone; the slice lies inside
            // the output buffer checked in `attend`.
            let dst = unsafe { std::slice::from_raw_parts_mut(self.out.0.add(row * hd), hd) };
            for (d, a) in dst.iter_mut().zip(&sc.acc[i * hd..][..hd]) {
                *d = a * inv;
            }
        }
    }
}

/// `e^x`, computed as ggml's vectorised `expf` computes each lane (range reduction by ln 2 in
/// two parts, a degree-5 polynomial, and scaling by 2^n with care near over- and underflow), so
/// that softmax weights round as in llama.cpp's attention.
#[inline(always)]
fn exp(x: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        return 0.0;
    }
    let shift = f32::from_bits(0x4b40_0000); // 1.5 * 2^23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), shift); // x * log2(e), rounded to an integer
    let n = z - shift;
    let b = (-n).mul_add(f32::from_bits(0x35bf_be8e), (-n).mul_add(f32::from_bits(0x3f31_7200), x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let p = f32::from_bits(0x3c07_2010).mul_add(b, f32::from_bits(0x3d2b_9f17));
    let q = f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb));
    let j = p.mul_add(u, q).mul_add(u, f32::from_bits(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    let g = if n <= 0.0 { 0x8200_0000u32 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// `out[r][jj] = q[row0 + r] · k[j0 + jj]` for R rows and `nk` keys (a multiple of LANES),
/// from keys transposed as `kt[d * stride + j]`. Rows of `out` are KEYS_PER_STEP + LANES apart.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scores<const R: usize>(q: &[f32], row0: usize, hd: usize, kt: &[f32], stride: usize, j0: usize, nk: usize, out: &mut [f32]) {
    let span = KEYS_PER_STEP + LANES;
    let qs: [&[f32]; R] = std::array::from_fn(|r| &q[(row0 + r) * hd..][..hd]);
    for t in (0..nk).step_by(LANES) {
        let mut acc = [[0f32; LANES]; R];
        for d in 0..hd {
            let kv: &[f32; LANES] = kt[d * stride + j0 + t..][..LANES].try_into().expect("LANES keys");
            for r in 0..R {
                let x = qs[r][d];
                for l in 0..LANES {
                    acc[r][l] = x.mul_add(kv[l], acc[r][l]);
                }
            }
        }
        for r in 0..R {
            out[r * span + t..][..LANES].copy_from_slice(&acc[r]);
        }
    }
}

/// `acc[r] += Σ_j p[r][j - j0] · v[j]` for R rows over keys j0..j1; `p` rows are `span` apart,
/// `acc` rows `hd` apart.
#[inline(always)]
fn weighted<const R: usize>(p: &[f32], span: usize, v: &[f32], hd: usize, j0: usize, j1: usize, acc: &mut [f32]) {
    let mut c = 0;
    while c + LANES <= hd {
        let mut a: [[f32; LANES]; R] = std::array::from_fn(|r| acc[r * hd + c..][..LANES].try_into().expect("LANES columns"));
        for j in j0..j1 {
            let vv: &[f32; LANES] = v[j * hd + c..][..LANES].try_into().expect("LANES columns");
            for r in 0..R {
                let w = p[r * span + j - j0];
                for l in 0..LANES {
                    a[r][l] = w.mul_add(vv[l], a[r][l]);
                }
            }
        }
        for r in 0..R {
            acc[r * hd + c..][..LANES].copy_from_slice(&a[r]);
        }
        c += LANES;
    }
    // Head sizes that are not a multiple of LANES (80 is, 24 is not): the last columns.
    for col in c..hd {
        for r in 0..R {
            let mut x = acc[r * hd + col];
            for j in j0..j1 {
                x = p[r * span + j - j0].mul_add(v[j * hd + col], x);
            }
            acc[r * hd + col] = x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    /// The definition in f64: scores, mask, softmax over the visible keys, weighted sum.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: &Shape) -> Vec<f32> {
        let hd = s.head_dim;
        let mut out = vec![0f32; s.q_len * s.n_head * hd];
        for h in 0..s.n_head {
            let kvh = h / (s.n_head / s.n_kv);
            for i in 0..s.q_len {
                let keys = s.keys(i);
                let qr = &q[(h * s.q_len + i) * hd..][..hd];
                let sc: Vec<f64> = keys
                    .clone()
                    .map(|j| {
                        let kr = &k[(kvh * s.kv_len + j) * hd..][..hd];
                        qr.iter().zip(kr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * s.scale as f64
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    let x: f64 = keys.clone().zip(&e).map(|(j, w)| w * v[(kvh * s.kv_len + j) * hd + d] as f64).sum();
                    out[(i * s.n_head + h) * hd + d] = if z > 0.0 { (x / z) as f32 } else { 0.0 };
                }
            }
        }
        out
    }

    /// Every head size the architectures use (64, 80, 128, 256, and 24 of the test fixtures),
    /// grouped KV heads, row counts that are not a multiple of the tiles, queries at an offset
    /// into the cache, a cache that starts late (a sliding window's), and windows: within 1e-5 of
    /// the f64 definition, on the SIMD and the portable paths, serial and shared out.
    #[test]
    fn attention_matches_the_definition() {
        let cases = [
            // (n_head, n_kv, q_len, kv_len, hd, offset, k_start, window)
            (4, 1, 37, 37, 256, 0, 0, None),
            (4, 2, 13, 150, 80, 137, 0, None),
            (2, 2, 70, 70, 80, 0, 0, Some(20)),
            (8, 2, 9, 100, 64, 500, 409, Some(64)),
            (4, 4, 33, 33, 128, 0, 0, None),
            (3, 1, 5, 11, 24, 6, 0, None),
            (2, 1, 1, 200, 64, 199, 0, None),
        ];
        for (n, &(n_head, n_kv, q_len, kv_len, hd, offset, k_start, window)) in cases.iter().enumerate() {
            let s = Shape { n_head, n_kv, q_len, kv_len, head_dim: hd, offset, k_start, window, scale: 1.0 / (hd as f32).sqrt() };
            let q = random(n_head * q_len * hd, 1 + n as u64);
            let k = random(n_kv * kv_len * hd, 100 + n as u64);
            let v = random(n_kv * kv_len * hd, 200 + n as u64);
            let want = reference(&q, &k, &v, &s);
            assert!(want.iter().any(|&x| x.abs() > 0.1), "case {n}: the reference is not trivial");
            for parallel in [false, true] {
                let mut got = vec![f32::NAN; want.len()];
                attend(&q, &k, &v, &s, &mut got, parallel);
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-5, "case {n} parallel={parallel}: max |diff| {worst}");
            }
            let mut portable = vec![f32::NAN; want.len()];
            let blocks = q_len.div_ceil(ROWS_PER_ITEM);
            let mut scratch = Scratch::new(hd);
            // The portable path, item by item, as a CPU without AVX2 runs it.
            let (kt, stride) = transpose_keys(&k, n_kv, kv_len, hd);
            for item in 0..n_head * blocks {
                let (h, b) = (item / blocks, item % blocks);
                let kvh = h / (n_head / n_kv);
                let job = Job {
                    s: &s,
                    q: &q[h * q_len * hd..][..q_len * hd],
                    kt: &kt[kvh * hd * stride..][..hd * stride],
                    stride,
                    v: &v[kvh * kv_len * hd..][..kv_len * hd],
                    head: h,
                    rows: b * ROWS_PER_ITEM..q_len.min((b + 1) * ROWS_PER_ITEM),
                    out: OutPtr(portable.as_mut_ptr()),
                };
                job.run(&mut scratch);
            }
            let worst = portable.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "case {n} portable: max |diff| {worst}");
        }
    }

    /// A window shorter than the distance to every cached key leaves a row with nothing to see:
    /// zeros, not NaN.
    #[test]
    fn rows_without_keys_are_zero() {
        let s = Shape { n_head: 1, n_kv: 1, q_len: 2, kv_len: 3, head_dim: 16, offset: 10, k_start: 0, window: Some(2), scale: 0.25 };
        let (q, k, v) = (random(32, 1), random(48, 2), random(48, 3));
        let mut out = vec![f32::NAN; 32];
        attend(&q, &k, &v, &s, &mut out, false);
        assert!(out.iter().all(|&x| x == 0.0));
    }
}
