//! Logit-level comparison of two runs of the same text, in llama.cpp's file format
//! (`llama-perplexity --kl-divergence-base FILE` writes it, `--kl-divergence` reads it), so a
//! base written by either engine can be read by the other.
//!
//! The file: `_logits_`, then n_ctx, n_vocab and n_chunk as i32, then the n_chunk * n_ctx token
//! ids (i32) the chunks were cut from, then for every scored position of every chunk (the
//! n_ctx - 1 - n_ctx/2 positions from n_ctx/2, as perplexity scores them) one row of
//! 2 * ((n_vocab + 1) / 2) + 4 u16: the f32 `scale` and `min_log_prob` in the first four, then
//! each token's log-probability as `min_log_prob + scale * q` (q = 0 where it lies more than 16
//! below the most likely token's).

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"_logits_";

/// u16 values per stored row.
fn row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// `max(logits)` and `ln(sum(exp(logit - max)))`, with the sum in f64 as llama.cpp takes it.
fn max_and_log_sum_exp(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&l| (l - max).exp() as f64).sum();
    (max, sum.ln() as f32)
}

/// Writes a base file.
pub struct BaseWriter<W: Write> {
    out: W,
    n_vocab: usize,
    row: Vec<u16>,
}

impl<W: Write> BaseWriter<W> {
    /// Writes the header; `tokens` are the n_chunk * n_ctx ids the chunks are cut from.
    pub fn new(mut out: W, n_ctx: usize, n_vocab: usize, tokens: &[u32]) -> Result<Self> {
        if n_ctx < 4 || n_vocab == 0 || tokens.is_empty() || tokens.len() % n_ctx != 0 {
            return Err(Error::Invalid(format!(
                "a base file needs whole chunks: {} tokens, context {n_ctx}, vocabulary {n_vocab}",
                tokens.len()
            )));
        }
        let i32_of = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| Error::Invalid(format!("{what} {v} does not fit the file format")))
        };
        let mut head = Vec::with_capacity(20 + 4 * tokens.len());
        head.extend_from_slice(MAGIC);
        for (v, what) in [(n_ctx, "context"), (n_vocab, "vocabulary size"), (tokens.len() / n_ctx, "chunk count")] {
            head.extend_from_slice(&i32_of(v, what)?.to_le_bytes());
        }
        for &t in tokens {
            head.extend_from_slice(&(t as i32).to_le_bytes());
        }
        out.write_all(&head).map_err(write_error)?;
        Ok(Self { out, n_vocab, row: vec![0; row_len(n_vocab)] })
    }

    /// Writes the log-probabilities of one scored position, given its logits.
    pub fn write_row(&mut self, logits: &[f32]) -> Result<()> {
        if logits.len() != self.n_vocab {
            return Err(Error::Invalid(format!("a row of {} logits for a vocabulary of {}", logits.len(), self.n_vocab)));
        }
        base_row(logits, &mut self.row);
        let bytes: Vec<u8> = self.row.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.out.write_all(&bytes).map_err(write_error)?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(write_error)?;
        Ok(())
    }
}

/// One position's stored row, as llama.cpp stores it: `scale` and `min_log_prob` (f32 each, in
/// two u16), then each token's log-probability quantized to 16 bits over the 16 nats below the
/// most likely token's. [`KlStats::add`] compares logits against such a row.
pub fn base_row(logits: &[f32], row: &mut Vec<u16>) {
    let n = logits.len();
    row.clear();
    row.resize(row_len(n), 0);
    let (max, lse) = max_and_log_sum_exp(logits);
    let min = logits.iter().copied().fold(f32::INFINITY, f32::min).max(max - 16.0);
    let min_log_prob = min - max - lse;
    let scale = (max - min) / 65535.0;
    row[..2].copy_from_slice(&u16_pair(scale));
    row[2..4].copy_from_slice(&u16_pair(min_log_prob));
    if scale > 0.0 {
        let inv = 1.0 / scale;
        for (q, &l) in row[4..4 + n].iter_mut().zip(logits) {
            *q = if l > min { (inv * (l - min)).round_ties_even().clamp(0.0, 65535.0) as u16 } else { 0 };
        }
    }
}

fn write_error(e: std::io::Error) -> Error {
    Error::Invalid(format!("cannot write the log-probability file: {e}"))
}

fn u16_pair(v: f32) -> [u16; 2] {
    let b = v.to_le_bytes();
    [u16::from_le_bytes([b[0], b[1]]), u16::from_le_bytes([b[2], b[3]])]
}

fn f32_of(pair: &[u16]) -> f32 {
    let (a, b) = (pair[0].to_le_bytes(), pair[1].to_le_bytes());
    f32::from_le_bytes([a[0], a[1], b[0], b[1]])
}

/// A base file opened for reading, row by row.
pub struct BaseReader {
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    /// The n_chunk * n_ctx token ids the chunks were cut from.
    pub tokens: Vec<u32>,
    input: std::io::BufReader<std::fs::File>,
    raw: Vec<u8>,
    rows_left: usize,
    path: std::path::PathBuf,
}

impl BaseReader {
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::Invalid(format!("{} is not a usable log-probability file: {why}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| Error::Invalid(format!("cannot open {}: {e}", path.display())))?;
        let io = |e: std::io::Error| Error::Io { path: path.to_path_buf(), source: e };
        let size = file.metadata().map_err(io)?.len();
        let mut input = std::io::BufReader::new(file);
        let mut head = [0u8; 20];
        input.read_exact(&mut head).map_err(|_| bad("shorter than its header".into()))?;
        if &head[..8] != MAGIC {
            return Err(bad("it does not start with _logits_".into()));
        }
        let field = |i: usize| i32::from_le_bytes(head[8 + 4 * i..12 + 4 * i].try_into().expect("4 bytes"));
        let (n_ctx, n_vocab, n_chunk) = (field(0), field(1), field(2));
        if n_ctx < 4 || n_vocab < 1 || n_chunk < 1 {
            return Err(bad(format!("context {n_ctx}, vocabulary {n_vocab}, {n_chunk} chunks")));
        }
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as u128, n_vocab as u128, n_chunk as u128);
        // Below 2^31 each: these products fit in u128.
        let rows = n_chunk * (n_ctx - 1 - n_ctx / 2);
        let want = 20 + 4 * n_chunk * n_ctx + 2 * rows * (2 * n_vocab.div_ceil(2) + 4);
        if size as u128 != want {
            return Err(bad(format!(
                "{size} bytes, but {n_chunk} chunks of {n_ctx} over a vocabulary of {n_vocab} take {want}"
            )));
        }
        // The size matched: the counts below are backed by the file's bytes.
        let (n_ctx, n_vocab, n_chunk, rows) = (n_ctx as usize, n_vocab as usize, n_chunk as usize, rows as usize);
        let mut raw = vec![0u8; 4 * n_chunk * n_ctx];
        input.read_exact(&mut raw).map_err(io)?;
        let tokens = raw
            .chunks_exact(4)
            .map(|b| {
                let t = i32::from_le_bytes(b.try_into().expect("4 bytes"));
                u32::try_from(t).ok().filter(|&t| (t as usize) < n_vocab).ok_or_else(|| bad(format!("token id {t}")))
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(Self { n_ctx, n_vocab, n_chunk, tokens, input, raw: vec![0; 2 * row_len(n_vocab)], rows_left: rows, path: path.to_path_buf() })
    }

    /// The next scored position's row (scale, min_log_prob, then one u16 per token).
    pub fn next_row(&mut self, row: &mut Vec<u16>) -> Result<()> {
        if self.rows_left == 0 {
            return Err(Error::Invalid("the log-probability file has no more rows".into()));
        }
        self.input.read_exact(&mut self.raw).map_err(|e| Error::Io { path: self.path.clone(), source: e })?;
        row.clear();
        row.extend(self.raw.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])));
        self.rows_left -= 1;
        Ok(())
    }
}

/// Running comparison of logits against base rows, with llama.cpp's definitions.
#[derive(Debug, Default, Clone)]
pub struct KlStats {
    kld: Vec<f64>,
    nll: f64,
    nll_base: f64,
    same_top: usize,
}

/// Summary of a [`KlStats`].
#[derive(Debug, Clone, PartialEq)]
pub struct KlSummary {
    pub count: usize,
    pub ppl: f64,
    /// From the stored rows, as llama.cpp reports it: a token stored at the floor (more than 16
    /// nats below the base's most likely one) counts at the floor.
    pub ppl_base: f64,
    /// Mean KL(base || this) in nats, and its standard error.
    pub mean_kld: f64,
    pub kld_err: f64,
    pub median_kld: f64,
    pub p99_kld: f64,
    pub max_kld: f64,
    /// Share of positions where both pick the same most likely token.
    pub same_top: f64,
}

impl KlStats {
    /// One scored position: `logits` of this run, `base` the stored row, `target` the next token.
    pub fn add(&mut self, logits: &[f32], base: &[u16], target: u32) -> Result<()> {
        let n = logits.len();
        if base.len() != row_len(n) || target as usize >= n {
            return Err(Error::Invalid(format!(
                "a base row of {} values against {n} logits (target {target})",
                base.len()
            )));
        }
        let (scale, min_log_prob) = (f32_of(&base[0..2]), f32_of(&base[2..4]));
        let q = &base[4..4 + n];
        let base_lp = |i: usize| scale * q[i] as f32 + min_log_prob;
        let (max, lse) = max_and_log_sum_exp(logits);
        let top = logits.iter().enumerate().fold(0, |b, (i, &l)| if l > logits[b] { i } else { b });
        let top_base = (0..n).fold(0, |b, i| if base_lp(i) > base_lp(b) { i } else { b });
        let norm = max + lse;
        let mut kld = 0f64;
        for (i, &l) in logits.iter().enumerate() {
            let lb = base_lp(i);
            // Tokens more than 16 below the base's top were not stored: llama.cpp skips them too.
            if lb > -16.0 {
                kld += (lb.exp() * (lb - l + norm)) as f64;
            }
        }
        self.kld.push(kld);
        self.nll += (norm - logits[target as usize]) as f64;
        self.nll_base -= base_lp(target as usize) as f64;
        self.same_top += usize::from(top == top_base);
        Ok(())
    }

    pub fn summary(&self) -> KlSummary {
        let count = self.kld.len();
        let c = count.max(1) as f64;
        let mean = self.kld.iter().sum::<f64>() / c;
        let var = self.kld.iter().map(|k| (k - mean) * (k - mean)).sum::<f64>() / (c - 1.0).max(1.0);
        let mut sorted = self.kld.clone();
        sorted.sort_by(f64::total_cmp);
        // llama.cpp's definitions: linear interpolation between ranks; the median of an even
        // count is the mean of the middle two.
        let at = |q: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let p = q * (count - 1) as f64;
            let i = p as usize;
            let f = p - i as f64;
            (1.0 - f) * sorted[i] + f * sorted[(i + 1).min(count - 1)]
        };
        let median = match count {
            0 => 0.0,
            c if c % 2 == 0 => 0.5 * (sorted[c / 2] + sorted[c / 2 - 1]),
            c => sorted[c / 2],
        };
        KlSummary {
            count,
            ppl: (self.nll / c).exp(),
            ppl_base: (self.nll_base / c).exp(),
            mean_kld: mean,
            kld_err: (var / c).sqrt(),
            median_kld: median,
            p99_kld: at(0.99),
            max_kld: sorted.last().copied().unwrap_or(0.0),
            same_top: self.same_top as f64 / c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions scored per chunk.
    fn scored_per_chunk(n_ctx: usize) -> usize {
        n_ctx - 1 - n_ctx / 2
    }

    fn row(seed: usize, n: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 1000.0 - 0.5) * 12.0).collect()
    }

    fn log_softmax(x: &[f32]) -> Vec<f64> {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        x.iter().map(|&v| v as f64 - lse).collect()
    }

    fn kl(p: &[f32], q: &[f32]) -> f64 {
        let (lp, lq) = (log_softmax(p), log_softmax(q));
        lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
    }

    /// Rows written and read back give the log-probabilities to within the 16-bit step, the
    /// header's layout is llama.cpp's, the KL of a row against itself is ~0, and against another
    /// row it equals the directly computed divergence.
    #[test]
    fn base_file_round_trips_and_kl_matches_the_definition() {
        let (n_ctx, n_vocab) = (8usize, 301usize);
        let tokens: Vec<u32> = (0..2 * n_ctx as u32).map(|i| (i * 37) % n_vocab as u32).collect();
        let path = std::env::temp_dir().join(format!("modu-kld-{}.bin", std::process::id()));
        let rows: Vec<Vec<f32>> = (0..2 * scored_per_chunk(n_ctx)).map(|s| row(s, n_vocab)).collect();
        let mut w = BaseWriter::new(std::fs::File::create(&path).unwrap(), n_ctx, n_vocab, &tokens).unwrap();
        for r in &rows {
            w.write_row(r).unwrap();
        }
        w.finish().unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"_logits_");
        assert_eq!(i32::from_le_bytes(bytes[8..12].try_into().unwrap()), n_ctx as i32);
        assert_eq!(i32::from_le_bytes(bytes[12..16].try_into().unwrap()), n_vocab as i32);
        assert_eq!(i32::from_le_bytes(bytes[16..20].try_into().unwrap()), 2);
        assert_eq!(i32::from_le_bytes(bytes[24..28].try_into().unwrap()), tokens[1] as i32);
        assert_eq!(bytes.len(), 20 + 4 * tokens.len() + rows.len() * 2 * (2 * 151 + 4));

        let mut r = BaseReader::open(&path).unwrap();
        assert_eq!((r.n_ctx, r.n_vocab, r.n_chunk), (n_ctx, n_vocab, 2));
        assert_eq!(r.tokens, tokens);
        let (mut same, mut other) = (KlStats::default(), KlStats::default());
        let mut base = Vec::new();
        for (i, x) in rows.iter().enumerate() {
            r.next_row(&mut base).unwrap();
            let (scale, min) = (f32_of(&base[0..2]), f32_of(&base[2..4]));
            let want = log_softmax(x);
            for (j, &q) in base[4..4 + n_vocab].iter().enumerate() {
                let got = (min + scale * q as f32) as f64;
                assert!((got - want[j]).abs() <= 1.0001 * scale as f64 / 2.0 + 1e-5, "row {i} token {j}: {got} vs {}", want[j]);
            }
            same.add(x, &base, 3).unwrap();
            let y = row(i + 17, n_vocab);
            other.add(&y, &base, 3).unwrap();
            let direct = kl(x, &y);
            let from_file = *other.kld.last().unwrap();
            assert!((from_file - direct).abs() < 1e-3 * direct.max(1e-3), "row {i}: {from_file} vs {direct}");
        }
        assert!(r.next_row(&mut base).is_err(), "reads past the last row");
        let s = same.summary();
        assert!(s.mean_kld.abs() < 1e-5 && s.same_top == 1.0 && (s.ppl / s.ppl_base - 1.0).abs() < 1e-4, "{s:?}");
        let o = other.summary();
        assert!(o.mean_kld > 0.1 && o.same_top < 1.0, "{o:?}");

        // A truncated or foreign file is refused with a reason.
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(BaseReader::open(&path).err().unwrap().to_string().contains("bytes"));
        let mut huge = b"_logits_".to_vec();
        for v in [i32::MAX, i32::MAX, i32::MAX] {
            huge.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, &huge).unwrap();
        assert!(BaseReader::open(&path).err().unwrap().to_string().contains("bytes"));
        std::fs::write(&path, b"GGUF and more bytes than a header").unwrap();
        assert!(BaseReader::open(&path).err().unwrap().to_string().contains("_logits_"));
        std::fs::remove_file(&path).ok();
    }
}
