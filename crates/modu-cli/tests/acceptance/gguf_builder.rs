//! Writes GGUF files byte by byte, so tests can build valid models and corrupt ones.

pub enum V {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArr(Vec<String>),
    F32Arr(Vec<f32>),
    I32Arr(Vec<i32>),
}

pub struct T {
    pub name: String,
    /// GGUF order: innermost dimension first.
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
}

pub fn str_bytes(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn value(out: &mut Vec<u8>, v: &V) {
    match v {
        V::U32(x) => {
            out.extend(4u32.to_le_bytes());
            out.extend(x.to_le_bytes());
        }
        V::F32(x) => {
            out.extend(6u32.to_le_bytes());
            out.extend(x.to_le_bytes());
        }
        V::Bool(b) => {
            out.extend(7u32.to_le_bytes());
            out.push(*b as u8);
        }
        V::Str(s) => {
            out.extend(8u32.to_le_bytes());
            str_bytes(out, s);
        }
        V::StrArr(a) => {
            out.extend(9u32.to_le_bytes());
            out.extend(8u32.to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|s| str_bytes(out, s));
        }
        V::F32Arr(a) => {
            out.extend(9u32.to_le_bytes());
            out.extend(6u32.to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|x| out.extend(x.to_le_bytes()));
        }
        V::I32Arr(a) => {
            out.extend(9u32.to_le_bytes());
            out.extend(5u32.to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|x| out.extend(x.to_le_bytes()));
        }
    }
}

/// A GGUF v3 image with 32-byte alignment.
pub fn build(kvs: &[(&str, V)], tensors: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        str_bytes(&mut out, k);
        value(&mut out, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        str_bytes(&mut out, &t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(t.type_id.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (t.data.len() as u64).div_ceil(32) * 32;
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    for t in tensors {
        out.extend(&t.data);
        while out.len() % 32 != 0 {
            out.push(0);
        }
    }
    out
}

fn f32_tensor(name: &str, dims: &[u64], seed: u32) -> T {
    let n: u64 = dims.iter().product();
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(12345);
    let mut data = Vec::with_capacity(n as usize * 4);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let v = (x as f32 / u32::MAX as f32 - 0.5) * 0.2;
        data.extend(v.to_le_bytes());
    }
    T { name: name.into(), dims: dims.to_vec(), type_id: 0, data }
}

fn ones(name: &str, n: u64) -> T {
    T { name: name.into(), dims: vec![n], type_id: 0, data: std::iter::repeat(1f32.to_le_bytes()).take(n as usize).flatten().collect() }
}

/// A complete, loadable two-layer llama model with a SentencePiece vocabulary of byte tokens
/// plus a few words: the positive control for every corruption.
pub fn tiny_llama(arch: &str) -> (Vec<(&'static str, V)>, Vec<T>) {
    let (hidden, ffn, layers, heads, vocab) = (64u64, 128u64, 2u64, 4u64, 300usize);
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for w in ["▁hello", "▁world", "hello", "▁", "he", "ll", "o"] {
        tokens.push(w.to_string());
        types.push(1);
    }
    while tokens.len() < vocab {
        tokens.push(format!("tok{}", tokens.len()));
        types.push(1);
    }
    let scores: Vec<f32> = (0..vocab).map(|i| -(i as f32)).collect();
    let kvs = vec![
        ("general.architecture", V::Str(arch.to_string())),
        ("llama.context_length", V::U32(128)),
        ("llama.embedding_length", V::U32(hidden as u32)),
        ("llama.block_count", V::U32(layers as u32)),
        ("llama.feed_forward_length", V::U32(ffn as u32)),
        ("llama.attention.head_count", V::U32(heads as u32)),
        ("llama.attention.head_count_kv", V::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("llama.rope.freq_base", V::F32(10000.0)),
        ("tokenizer.ggml.model", V::Str("llama".into())),
        ("tokenizer.ggml.tokens", V::StrArr(tokens)),
        ("tokenizer.ggml.scores", V::F32Arr(scores)),
        ("tokenizer.ggml.token_type", V::I32Arr(types)),
        ("tokenizer.ggml.bos_token_id", V::U32(1)),
        ("tokenizer.ggml.eos_token_id", V::U32(2)),
        ("tokenizer.ggml.add_bos_token", V::Bool(true)),
    ];
    let hd = hidden / heads;
    let mut ts = vec![f32_tensor("token_embd.weight", &[hidden, vocab as u64], 1), ones("output_norm.weight", hidden)];
    for l in 0..layers {
        let p = |s: &str| format!("blk.{l}.{s}");
        let seed = 10 + l as u32 * 10;
        ts.push(ones(&p("attn_norm.weight"), hidden));
        ts.push(f32_tensor(&p("attn_q.weight"), &[hidden, hidden], seed));
        ts.push(f32_tensor(&p("attn_k.weight"), &[hidden, 2 * hd], seed + 1));
        ts.push(f32_tensor(&p("attn_v.weight"), &[hidden, 2 * hd], seed + 2));
        ts.push(f32_tensor(&p("attn_output.weight"), &[hidden, hidden], seed + 3));
        ts.push(ones(&p("ffn_norm.weight"), hidden));
        ts.push(f32_tensor(&p("ffn_gate.weight"), &[hidden, ffn], seed + 4));
        ts.push(f32_tensor(&p("ffn_up.weight"), &[hidden, ffn], seed + 5));
        ts.push(f32_tensor(&p("ffn_down.weight"), &[ffn, hidden], seed + 6));
    }
    (kvs, ts)
}
