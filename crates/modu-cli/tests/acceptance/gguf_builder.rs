//! Writes GGUF files byte by byte, so tests can build valid models and corrupt ones.

pub enum V {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArr(Vec<String>),
    F32Arr(Vec<f32>),
    I32Arr(Vec<i32>),
    BoolArr(Vec<bool>),
}

pub struct T {
    pub name: String,
    /// GGUF order: innermost dimension first.
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
}

use candle_core::quantized::GgmlDType;

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
        V::BoolArr(a) => {
            out.extend(9u32.to_le_bytes());
            out.extend(7u32.to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|b| out.push(*b as u8));
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
pub fn build(kvs: &[(String, V)], tensors: &[T]) -> Vec<u8> {
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

fn random_f32(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * 0.2
        })
        .collect()
}

fn ggml_type_id(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::BF16 => 30,
        other => panic!("no test encoding for {other:?}"),
    }
}

/// A weight matrix [out, in] of deterministic random values stored as `dtype` (candle's own
/// quantizer writes the blocks).
fn weight(name: &str, out_dim: u64, in_dim: u64, seed: u32, dtype: GgmlDType) -> T {
    let values = random_f32((out_dim * in_dim) as usize, seed);
    let t = candle_core::Tensor::from_vec(values, (out_dim as usize, in_dim as usize), &candle_core::Device::Cpu).unwrap();
    let q = candle_core::quantized::QTensor::quantize(&t, dtype).unwrap();
    T { name: name.into(), dims: vec![in_dim, out_dim], type_id: ggml_type_id(dtype), data: q.data().unwrap().into_owned() }
}

fn ones(name: &str, n: u64) -> T {
    T { name: name.into(), dims: vec![n], type_id: 0, data: std::iter::repeat(1f32.to_le_bytes()).take(n as usize).flatten().collect() }
}

/// A small loadable model of `arch` (llama, qwen3, exaone, exaone4) with a SentencePiece
/// vocabulary of byte tokens plus a few words, weights stored as `dtype`. Dimensions are
/// multiples of 256 so every block type applies.
pub fn tiny_model(arch: &str, dtype: GgmlDType) -> (Vec<(String, V)>, Vec<T>) {
    let (hidden, ffn, layers, heads, kv_heads, vocab) = (256u64, 512u64, 2u64, 4u64, 2u64, 300usize);
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
    let k = |key: &str| format!("{arch}.{key}");
    let mut kvs = vec![
        ("general.architecture".to_string(), V::Str(arch.to_string())),
        (k("context_length"), V::U32(128)),
        (k("embedding_length"), V::U32(hidden as u32)),
        (k("block_count"), V::U32(layers as u32)),
        (k("feed_forward_length"), V::U32(ffn as u32)),
        (k("attention.head_count"), V::U32(heads as u32)),
        (k("attention.head_count_kv"), V::U32(kv_heads as u32)),
        (k("attention.layer_norm_rms_epsilon"), V::F32(1e-5)),
        (k("rope.freq_base"), V::F32(10000.0)),
        ("tokenizer.ggml.model".to_string(), V::Str("llama".into())),
        ("tokenizer.ggml.tokens".to_string(), V::StrArr(tokens)),
        ("tokenizer.ggml.scores".to_string(), V::F32Arr(scores)),
        ("tokenizer.ggml.token_type".to_string(), V::I32Arr(types)),
        ("tokenizer.ggml.bos_token_id".to_string(), V::U32(1)),
        ("tokenizer.ggml.eos_token_id".to_string(), V::U32(2)),
        ("tokenizer.ggml.add_bos_token".to_string(), V::Bool(true)),
    ];
    if arch == "exaone4" {
        // Hybrid: layer 0 slides over 8 tokens with RoPE, layer 1 is global without.
        kvs.push((k("attention.sliding_window"), V::U32(8)));
        kvs.push((k("attention.sliding_window_pattern"), V::BoolArr(vec![true, false])));
    }
    let hd = hidden / heads;
    let mut ts = vec![weight("token_embd.weight", vocab as u64, hidden, 1, dtype), ones("output_norm.weight", hidden)];
    for l in 0..layers {
        let p = |s: &str| format!("blk.{l}.{s}");
        let seed = 10 + l as u32 * 10;
        if arch != "exaone4" {
            ts.push(ones(&p("attn_norm.weight"), hidden));
            ts.push(ones(&p("ffn_norm.weight"), hidden));
        } else {
            ts.push(ones(&p("post_attention_norm.weight"), hidden));
            ts.push(ones(&p("post_ffw_norm.weight"), hidden));
        }
        if arch == "exaone4" || arch == "qwen3" {
            ts.push(ones(&p("attn_q_norm.weight"), hd));
            ts.push(ones(&p("attn_k_norm.weight"), hd));
        }
        ts.push(weight(&p("attn_q.weight"), hidden, hidden, seed, dtype));
        ts.push(weight(&p("attn_k.weight"), kv_heads * hd, hidden, seed + 1, dtype));
        ts.push(weight(&p("attn_v.weight"), kv_heads * hd, hidden, seed + 2, dtype));
        ts.push(weight(&p("attn_output.weight"), hidden, hidden, seed + 3, dtype));
        ts.push(weight(&p("ffn_gate.weight"), ffn, hidden, seed + 4, dtype));
        ts.push(weight(&p("ffn_up.weight"), ffn, hidden, seed + 5, dtype));
        ts.push(weight(&p("ffn_down.weight"), hidden, ffn, seed + 6, dtype));
    }
    (kvs, ts)
}

/// The llama-architecture tiny model in f32: the positive control for every corruption.
pub fn tiny_llama() -> (Vec<(String, V)>, Vec<T>) {
    tiny_model("llama", GgmlDType::F32)
}
