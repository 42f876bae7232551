use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::quantized::gguf_file::Value;

use super::*;
use crate::formats::gguf::GgufFile;

fn s(x: &str) -> Value {
    Value::String(x.to_string())
}

fn strings<S: AsRef<str>>(v: &[S]) -> Value {
    Value::Array(v.iter().map(|x| s(x.as_ref())).collect())
}

fn floats(v: &[f32]) -> Value {
    Value::Array(v.iter().map(|x| Value::F32(*x)).collect())
}

fn ints(v: &[i32]) -> Value {
    Value::Array(v.iter().map(|x| Value::I32(*x)).collect())
}

/// An SPM vocabulary laid out like Llama's: <unk>, <s>, </s>, 256 byte tokens, then `pieces`
/// (text, score, token type).
struct SpmVocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
}

impl SpmVocab {
    fn new(pieces: &[(&str, f32, i32)]) -> Self {
        let mut v = SpmVocab {
            tokens: vec![],
            scores: vec![],
            types: vec![],
        };
        v.add("<unk>", 0.0, 2);
        v.add("<s>", 0.0, 3);
        v.add("</s>", 0.0, 3);
        for b in 0..256 {
            v.add(&format!("<0x{b:02X}>"), 0.0, 6);
        }
        for (t, sc, ty) in pieces {
            v.add(t, *sc, *ty);
        }
        v
    }

    fn add(&mut self, t: &str, score: f32, ty: i32) {
        self.tokens.push(t.to_string());
        self.scores.push(score);
        self.types.push(ty);
    }

    fn metadata(&self, extra: Vec<(&str, Value)>) -> HashMap<String, Value> {
        let mut md = HashMap::new();
        md.insert("tokenizer.ggml.model".to_string(), s("llama"));
        md.insert("tokenizer.ggml.tokens".to_string(), strings(&self.tokens));
        md.insert("tokenizer.ggml.scores".to_string(), floats(&self.scores));
        md.insert("tokenizer.ggml.token_type".to_string(), ints(&self.types));
        for (k, v) in extra {
            md.insert(k.to_string(), v);
        }
        md
    }

    fn tokenizer(&self, extra: Vec<(&str, Value)>) -> Tokenizer {
        match Tokenizer::from_metadata(&self.metadata(extra)) {
            Ok(t) => t,
            Err(e) => panic!("test vocabulary should load: {e}"),
        }
    }
}

fn id(t: &Tokenizer, text: &str) -> u32 {
    match t.token_to_id(text) {
        Some(i) => i,
        None => panic!("{text:?} is not in the test vocabulary"),
    }
}

fn enc(t: &Tokenizer, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
    match t.encode(text, add_special, parse_special) {
        Ok(ids) => ids,
        Err(e) => panic!("encode {text:?}: {e}"),
    }
}

fn no_prefix() -> Vec<(&'static str, Value)> {
    vec![("tokenizer.ggml.add_space_prefix", Value::Bool(false))]
}

/// Catches a merge queue ordered the wrong way (lowest score first, or rightmost on ties).
#[test]
fn spm_merges_highest_score_first_and_leftmost_on_ties() {
    let base = [
        ("a", -10.0, 1),
        ("b", -10.0, 1),
        ("c", -10.0, 1),
        ("x", -10.0, 1),
        ("y", -10.0, 1),
    ];
    let mut pieces = base.to_vec();
    pieces.extend([("ab", -5.0, 1), ("bc", -3.0, 1)]);
    let t = SpmVocab::new(&pieces).tokenizer(no_prefix());
    assert_eq!(
        enc(&t, "abc", false, false),
        vec![id(&t, "a"), id(&t, "bc")]
    );

    let mut pieces = base.to_vec();
    pieces.extend([("ab", -1.0, 1), ("bc", -3.0, 1)]);
    let t = SpmVocab::new(&pieces).tokenizer(no_prefix());
    assert_eq!(
        enc(&t, "abc", false, false),
        vec![id(&t, "ab"), id(&t, "c")]
    );

    // Merges chain: "bc" first, then "a"+"bc".
    let mut pieces = base.to_vec();
    pieces.extend([("ab", -5.0, 1), ("bc", -3.0, 1), ("abc", -8.0, 1)]);
    let t = SpmVocab::new(&pieces).tokenizer(no_prefix());
    assert_eq!(
        enc(&t, "abcab", false, false),
        vec![id(&t, "abc"), id(&t, "ab")]
    );

    let mut pieces = base.to_vec();
    pieces.extend([("xy", -2.0, 1), ("yx", -2.0, 1)]);
    let t = SpmVocab::new(&pieces).tokenizer(no_prefix());
    assert_eq!(
        enc(&t, "xyx", false, false),
        vec![id(&t, "xy"), id(&t, "x")]
    );
    assert_eq!(
        enc(&t, "yxy", false, false),
        vec![id(&t, "yx"), id(&t, "y")]
    );
}

/// Catches characters outside the vocabulary being dropped or mapped to UNK instead of bytes.
#[test]
fn spm_byte_fallback_and_round_trip() {
    let t = SpmVocab::new(&[("a", -1.0, 1), ("▁", -2.0, 1)]).tokenizer(no_prefix());
    let ids = enc(&t, "a é한", false, false);
    let byte = |b: u8| 3 + b as u32;
    assert_eq!(
        ids,
        vec![
            id(&t, "a"),
            id(&t, "▁"),
            byte(0xC3),
            byte(0xA9),
            byte(0xED),
            byte(0x95),
            byte(0x9C)
        ]
    );
    assert_eq!(t.decode(&ids), "a é한");
    assert_eq!(&*t.token_bytes(byte(0xED)), &[0xED]);
    assert_eq!(&*t.token_bytes(id(&t, "▁")), b" ");
}

/// Catches a missing or misplaced SentencePiece space prefix (start of text, after specials).
#[test]
fn spm_space_prefix() {
    let pieces = [
        ("a", -10.0, 1),
        ("▁", -20.0, 1),
        ("▁a", -1.0, 1),
        ("<ctrl>", 0.0, 3),
    ];
    let v = SpmVocab::new(&pieces);
    let t = v.tokenizer(vec![]); // llama default: add_space_prefix = true, add_bos = true
    let (a, sa, ctrl) = (id(&t, "a"), id(&t, "▁a"), id(&t, "<ctrl>"));
    assert_eq!(enc(&t, "a", false, false), vec![sa]);
    assert_eq!(enc(&t, "a a", false, false), vec![sa, sa]);
    assert_eq!(enc(&t, "a", true, false), vec![1, sa]);
    assert_eq!(enc(&t, "a<ctrl>a", false, true), vec![sa, ctrl, sa]);
    assert_eq!(enc(&t, "", true, false), vec![1]);
    assert!(enc(&t, "", false, false).is_empty());

    let t = v.tokenizer(no_prefix());
    assert_eq!(enc(&t, "a", false, false), vec![a]);
    assert_eq!(enc(&t, "a a", false, false), vec![a, sa]);
    assert_eq!(enc(&t, "a<ctrl>a", false, true), vec![a, ctrl, a]);
}

/// Catches special tokens matched leftmost-longest instead of llama.cpp's longest-token-first
/// order, control tokens matched without `parse_special`, or user-defined ones skipped.
#[test]
fn special_token_partition() {
    let pieces = [
        ("a", -1.0, 1),
        ("c", -1.0, 1),
        ("d", -1.0, 1),
        ("ab", 0.0, 4),
        ("bcd", 0.0, 4),
        ("<ctrl>", 0.0, 3),
    ];
    let t = SpmVocab::new(&pieces).tokenizer(no_prefix());
    let (a, bcd, ab, ctrl) = (id(&t, "a"), id(&t, "bcd"), id(&t, "ab"), id(&t, "<ctrl>"));
    assert_eq!(enc(&t, "abcd", false, false), vec![a, bcd]);
    assert_eq!(enc(&t, "abab", false, false), vec![ab, ab]);
    assert_eq!(enc(&t, "a<ctrl>", false, true), vec![a, ctrl]);
    // Without parse_special the control token is plain text: bytes, except 'c', a token here.
    let byte = |c: char| 3 + c as u32;
    assert_eq!(
        enc(&t, "a<ctrl>", false, false),
        vec![
            a,
            byte('<'),
            id(&t, "c"),
            byte('t'),
            byte('r'),
            byte('l'),
            byte('>')
        ]
    );
    assert!(t.token_bytes(ctrl).is_empty());
    assert_eq!(&*t.token_bytes(ab), b"ab");
    assert!(t.is_control(ctrl) && !t.is_control(ab));
    assert_eq!(
        t.decode(&enc(&t, "xa<ctrl>abcd", false, false)),
        "xa<ctrl>abcd"
    );
}

/// GPT-2 byte characters for `bytes`.
fn byte_level(bytes: &[u8]) -> String {
    let table = bpe_byte_chars();
    bytes.iter().map(|&b| table[b as usize]).collect()
}

fn bpe_byte_chars() -> Vec<char> {
    let mut table = Vec::new();
    let mut n = 0;
    for b in 0u32..256 {
        let keep =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        table.push(if keep {
            char::from_u32(b).unwrap_or('?')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('?')
        });
    }
    table
}

fn bpe_metadata(
    pre: &str,
    tokens: &[String],
    types: &[i32],
    merges: &[String],
) -> HashMap<String, Value> {
    let mut md = HashMap::new();
    md.insert("tokenizer.ggml.model".to_string(), s("gpt2"));
    md.insert("tokenizer.ggml.pre".to_string(), s(pre));
    md.insert("tokenizer.ggml.tokens".to_string(), strings(tokens));
    md.insert("tokenizer.ggml.token_type".to_string(), ints(types));
    md.insert("tokenizer.ggml.merges".to_string(), strings(merges));
    md
}

/// A byte-level vocabulary: the 256 byte characters (id = byte), then `extra`.
fn small_bpe(pre: &str, extra: &[(&str, i32)], merges: &[&str]) -> Tokenizer {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_level(&[b])).collect();
    let mut types = vec![1; 256];
    for (t, ty) in extra {
        tokens.push(t.to_string());
        types.push(*ty);
    }
    let merges: Vec<String> = merges.iter().map(|m| m.to_string()).collect();
    match Tokenizer::from_metadata(&bpe_metadata(pre, &tokens, &types, &merges)) {
        Ok(t) => t,
        Err(e) => panic!("test BPE vocabulary should load: {e}"),
    }
}

/// Catches merges applied in the wrong order, a wrong byte-to-character table, or bytes lost for
/// Korean and emoji.
#[test]
fn bpe_small_vocab() {
    let t = small_bpe(
        "gpt-2",
        &[
            ("he", 1),
            ("ll", 1),
            ("hell", 1),
            ("hello", 1),
            ("Ġw", 1),
            ("<|endofturn|>", 3),
            ("<|user|>", 4),
        ],
        &["h e", "l l", "he ll", "hell o", "Ġ w"],
    );
    let ids = enc(&t, "hello world", false, false);
    assert_eq!(ids, vec![id(&t, "hello"), id(&t, "Ġw"), 111, 114, 108, 100]);
    assert_eq!(t.decode(&ids), "hello world");

    let text = "한국어 🙂 héllo\n\t<|user|>x<|endofturn|>";
    let ids = enc(&t, text, false, false);
    assert!(ids.contains(&id(&t, "<|user|>")));
    assert!(!ids.contains(&id(&t, "<|endofturn|>")));
    assert_eq!(t.decode(&ids), text);
    let ids = enc(&t, text, false, true);
    assert!(ids.contains(&id(&t, "<|endofturn|>")));
    assert_eq!(t.decode(&ids), text.replace("<|endofturn|>", ""));
    // "한" is ED 95 9C: three byte tokens, ids equal to the bytes.
    assert_eq!(&enc(&t, "한", false, false), &[0xED, 0x95, 0x9C]);
    assert!(t.end_of_generation_ids().contains(&id(&t, "<|endofturn|>")));
}

fn words(t: &Tokenizer, text: &str) -> Vec<String> {
    match &t.model {
        Model::Bpe(b) => b
            .split(text)
            .into_iter()
            .map(|(a, z)| text[a..z].to_string())
            .collect(),
        Model::Spm => panic!("not a BPE tokenizer"),
    }
}

/// Catches a pre-tokenizer mapped to the wrong regexes (EXAONE 3 splits digits, EXAONE 4 does not,
/// K-EXAONE keeps space-separated words together).
#[test]
fn bpe_pre_tokenizers() {
    let w = |pre: &str, text: &str| words(&small_bpe(pre, &[], &[]), text);
    assert_eq!(w("exaone", "abc 123"), ["abc", " ", "1", "2", "3"]);
    assert_eq!(w("exaone4", "abc 123"), ["abc", " 123"]);
    assert_eq!(w("llama-bpe", "abc 12345"), ["abc", " ", "123", "45"]);
    assert_eq!(w("qwen2", "abc 123"), ["abc", " ", "1", "2", "3"]);
    assert_eq!(
        w("exaone-moe", "hello big world, 안녕 하세요 12"),
        ["hello big world", ",", " 안녕 하세요", " ", "1", "2"]
    );
    assert_eq!(
        w("gpt-2", "I'm  here\n\n"),
        ["I", "'m", " ", " here", "\n\n"]
    );
    assert_eq!(
        w("default", "a+b=3000!"),
        ["a", "+", "b", "=", "300", "0", "!"]
    );
    for pre in [
        "",
        "default",
        "llama-bpe",
        "dbrx",
        "glm4",
        "gpt-2",
        "exaone",
        "exaone4",
        "exaone-moe",
        "qwen2",
        "qwen35",
        "falcon",
        "deepseek-coder",
        "gpt-4o",
        "tekken",
        "seed-coder",
        "bailingmoe",
        "ufakzeka",
        "laguna",
        "poro-chat",
        "viking",
    ] {
        let t = small_bpe(pre, &[], &[]);
        let text = "Hello, 세계! I'LL pay $12,345.67 for 🙂🙂\r\n\n  done\té";
        let joined: String = words(&t, text).concat();
        assert_eq!(
            joined, text,
            "pre-tokenizer {pre:?} must cover the text exactly"
        );
        assert_eq!(
            t.decode(&enc(&t, text, false, false)),
            text,
            "pre-tokenizer {pre:?}"
        );
    }
}

const CORPUS: &[&str] = &[
    "The quick brown fox jumps over the lazy dog. I'm sure they'll say it's fine, we've done it.",
    "안녕하세요, 오늘 날씨가 정말 좋네요. 한국어와 English가 섞인 문장입니다: 서울 2024년.",
    "대한민국의 수도는 서울이고, 인구는 약 950만 명입니다. 한글은 세종대왕이 만들었습니다.",
    "Numbers 12345 and 3.14159, dates like 2024-12-09; emoji 🙂😀🎉 and symbols #$%&*!",
    "  Leading spaces,  double  spaces\n\tand tabs\r\nnew lines\n\n\nend",
    "Café naïve résumé — e\u{301}tude, 한\u{302}글 (combining marks)",
    "def main():\n    print('hello world')\n    return 0\n",
    "LG AI Research released EXAONE 3.5 and EXAONE 4.0; K-EXAONE is a mixture of experts.",
    "모든 사람은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다.",
    "She said: \"DON'T stop!\" — and we didn't. THEY'RE HERE, YOU'VE SEEN IT.",
];

const PROBES: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "안녕하세요, 오늘 날씨가 정말 좋네요.",
    "  Hello,  world!\n\tTabs and 12345 numbers; emoji 🙂 end",
    "한국어와 English가 섞인 문장입니다: 서울 2024년.",
    "I'LL BE THERE, you're late, it'd be nice; 'quoted' words",
    "e\u{301}e\u{301}e\u{301} 한\u{302}글 ㄱㄴㄷ ᄀᄁ 丁七 日本語 Ελληνικά русский",
    "\n\n\n   \t\t  \r\n x  ",
    "🙂🙂🙂 👨‍👩‍👧 🇰🇷 ✔️",
    "3.14159 + 2,718 = 5.86 ; 000123 1,000,000원",
    "unseen wordsbytes zqxj ĳ ǅ ﬁ",
];

/// Trains a small BPE with HF `tokenizers` under the given pre-tokenizer and returns it with
/// the vocabulary (by id) and merges it learnt.
fn hf_bpe(
    pre: serde_json::Value,
    ignore_merges: bool,
) -> (tokenizers::Tokenizer, Vec<String>, Vec<String>) {
    use tokenizers::models::bpe::BpeTrainer;
    use tokenizers::models::TrainerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;

    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": pre, "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": {}, "merges": []}
    });
    let mut tk: tokenizers::Tokenizer = json.to_string().parse().expect("HF tokenizer JSON");
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(700)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tk.train(&mut trainer, CORPUS.iter()).expect("HF training");
    let mut v: serde_json::Value =
        serde_json::from_str(&tk.to_string(false).expect("HF serialize")).expect("HF JSON");
    v["model"]["ignore_merges"] = serde_json::Value::Bool(ignore_merges);
    let tk: tokenizers::Tokenizer = v.to_string().parse().expect("HF reload");

    let vocab = v["model"]["vocab"].as_object().expect("vocab object");
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, i) in vocab {
        tokens[i.as_u64().expect("id") as usize] = t.clone();
    }
    let merges = v["model"]["merges"]
        .as_array()
        .expect("merges array")
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(p) => {
                format!(
                    "{} {}",
                    p[0].as_str().expect("merge"),
                    p[1].as_str().expect("merge")
                )
            }
            other => panic!("unexpected merge {other}"),
        })
        .collect();
    (tk, tokens, merges)
}

/// Catches any divergence from HF `tokenizers` (the reference the GGUF vocabularies come from) on
/// Korean, emoji, combining marks, digits and whitespace runs, for each EXAONE pre-tokenizer.
#[test]
fn bpe_matches_hf_tokenizers() {
    use serde_json::json;
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    let cases = [
        ("gpt-2", byte_level(true), false),
        ("exaone4", byte_level(true), false),
        (
            "exaone",
            json!({"type": "Sequence", "pretokenizers": [split(r"\p{N}"), byte_level(true)]}),
            false,
        ),
        (
            "llama-bpe",
            json!({"type": "Sequence", "pretokenizers": [split(bpe::LLAMA3), byte_level(false)]}),
            true,
        ),
        (
            "qwen2",
            json!({"type": "Sequence", "pretokenizers": [split(bpe::QWEN2), byte_level(false)]}),
            false,
        ),
        (
            "exaone-moe",
            json!({"type": "Sequence", "pretokenizers": [split(bpe::EXAONE_MOE), byte_level(false)]}),
            false,
        ),
    ];
    for (pre, hf_pre, ignore_merges) in cases {
        let (hf, tokens, merges) = hf_bpe(hf_pre, ignore_merges);
        assert!(merges.len() > 100, "{pre}: training learnt too few merges");
        let types = vec![1; tokens.len()];
        let ours = match Tokenizer::from_metadata(&bpe_metadata(pre, &tokens, &types, &merges)) {
            Ok(t) => t,
            Err(e) => panic!("{pre}: {e}"),
        };
        for text in PROBES.iter().chain(CORPUS) {
            let want = hf
                .encode(*text, false)
                .expect("HF encode")
                .get_ids()
                .to_vec();
            let got = enc(&ours, text, false, false);
            assert_eq!(got, want, "{pre}: {text:?}");
            assert_eq!(ours.decode(&got), *text, "{pre}: round trip");
        }
    }
}

/// Catches the stream decoder emitting half a character, or losing or inventing text.
#[test]
fn stream_decoder_never_splits_characters() {
    let t = small_bpe("exaone4", &[], &[]);
    let text = "안녕하세요 🙂 é";
    let ids = enc(&t, text, false, false);
    assert_eq!(ids.len(), text.len(), "every byte is its own token here");
    let mut d = StreamDecoder::new(&t);
    let mut out = String::new();
    for (i, &tid) in ids.iter().enumerate() {
        let piece = d.push(tid);
        if i + 1 < 3 {
            assert!(piece.is_empty(), "'안' needs all three of its bytes");
        }
        assert!(!piece.contains(char::REPLACEMENT_CHARACTER));
        out.push_str(&piece);
    }
    out.push_str(&d.finish());
    assert_eq!(out, text);

    // Arbitrary ids, including invalid sequences: same as decoding everything at once.
    let mut seed = 12345u64;
    for _ in 0..200 {
        let mut d = StreamDecoder::new(&t);
        let mut ids = Vec::new();
        let mut out = String::new();
        for _ in 0..20 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let tid = (seed >> 33) as u32 % 300;
            ids.push(tid);
            out.push_str(&d.push(tid));
        }
        out.push_str(&d.finish());
        assert_eq!(out, t.decode(&ids));
    }
}

/// Catches panics, out-of-bounds reads or silent acceptance of broken tokenizer metadata.
#[test]
fn hostile_metadata() {
    let v = SpmVocab::new(&[("a", -1.0, 1)]);
    let err = |md: HashMap<String, Value>| match Tokenizer::from_metadata(&md) {
        Ok(_) => panic!("broken metadata was accepted"),
        Err(Error::Tokenizer(msg)) => msg,
        Err(e) => panic!("wrong error kind: {e}"),
    };
    let base = v.metadata(vec![]);
    let with = |k: &str, val: Option<Value>| {
        let mut md = base.clone();
        match val {
            Some(x) => md.insert(k.to_string(), x),
            None => md.remove(k),
        };
        md
    };
    assert!(err(with("tokenizer.ggml.tokens", None)).contains("tokenizer.ggml.tokens"));
    assert!(err(with("tokenizer.ggml.tokens", Some(Value::Array(vec![])))).contains("empty"));
    assert!(err(with("tokenizer.ggml.tokens", Some(s("a")))).contains("array"));
    assert!(err(with("tokenizer.ggml.scores", Some(floats(&[1.0])))).contains("entries"));
    assert!(err(with("tokenizer.ggml.token_type", Some(ints(&[1, 1])))).contains("entries"));
    let mut bad_scores: Vec<Value> = v.scores.iter().map(|x| Value::F32(*x)).collect();
    bad_scores[7] = s("high");
    assert!(err(with(
        "tokenizer.ggml.scores",
        Some(Value::Array(bad_scores))
    ))
    .contains("scores[7]"));
    let mut dup = v.tokens.clone();
    dup[5] = "a".to_string();
    assert!(err(with("tokenizer.ggml.tokens", Some(strings(&dup)))).contains("duplicate"));
    let n = v.tokens.len() as u32;
    assert!(err(with("tokenizer.ggml.bos_token_id", Some(Value::U32(n)))).contains("bos_token_id"));
    assert!(
        err(with("tokenizer.ggml.eos_token_id", Some(Value::I32(-1)))).contains("eos_token_id")
    );
    assert!(err(with("tokenizer.ggml.bos_token_id", Some(s("1")))).contains("integer"));
    assert!(err(with("tokenizer.ggml.model", Some(s("bert")))).contains("'bert'"));
    assert!(err(with("tokenizer.ggml.model", None)).contains("tokenizer.ggml.model"));
    assert!(err(with("tokenizer.ggml.add_bos_token", Some(Value::U8(1)))).contains("bool"));

    // Stray ids for optional tokens are ignored, as llama.cpp does.
    let md = with("tokenizer.ggml.padding_token_id", Some(Value::U32(n)));
    assert!(Tokenizer::from_metadata(&md).is_ok());
    // A one-token vocabulary has no BOS, but SPM adds BOS by default.
    let mut md = base.clone();
    md.insert("tokenizer.ggml.tokens".into(), strings(&["a"]));
    md.insert("tokenizer.ggml.scores".into(), floats(&[0.0]));
    md.insert("tokenizer.ggml.token_type".into(), ints(&[1]));
    assert!(err(md.clone()).contains("add_bos_token"));
    md.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(false));
    assert!(Tokenizer::from_metadata(&md).is_ok());

    // Malformed byte tokens and NaN scores load, render as nothing and never panic.
    let mut tokens = v.tokens.clone();
    tokens[3] = "<0xZZ>".into();
    tokens[4] = "<0x-1>".into();
    tokens[5] = "<0x>".into();
    let mut scores = v.scores.clone();
    scores[259] = f32::NAN;
    let mut md = with("tokenizer.ggml.tokens", Some(strings(&tokens)));
    md.insert("tokenizer.ggml.scores".into(), floats(&scores));
    let t = match Tokenizer::from_metadata(&md) {
        Ok(t) => t,
        Err(e) => panic!("malformed byte tokens should be tolerated: {e}"),
    };
    assert!(t.token_bytes(3).is_empty() && t.token_bytes(4).is_empty());
    let ids = enc(&t, "\u{0}\u{1}\u{2} aaa", true, true);
    assert!(!ids.is_empty());
    assert!(t.token_bytes(u32::MAX).is_empty());
    assert_eq!(t.decode(&[u32::MAX, 0, 1]), "");

    // BPE specifics.
    let tokens: Vec<String> = (0..=255u8).map(|b| byte_level(&[b])).collect();
    let types = vec![1; 256];
    let md = bpe_metadata("gpt-2", &tokens, &types, &["a b".to_string()]);
    let with_bpe = |k: &str, val: Option<Value>| {
        let mut m = md.clone();
        match val {
            Some(x) => m.insert(k.to_string(), x),
            None => m.remove(k),
        };
        m
    };
    assert!(err(with_bpe("tokenizer.ggml.merges", None)).contains("merges"));
    assert!(err(with_bpe("tokenizer.ggml.merges", Some(ints(&[1])))).contains("merges[0]"));
    assert!(err(with_bpe("tokenizer.ggml.pre", Some(s("klingon")))).contains("'klingon'"));
    // Merge lines without a separating space are skipped, not a crash.
    let t = Tokenizer::from_metadata(&with_bpe(
        "tokenizer.ggml.merges",
        Some(strings(&["", " ", "ab", " a"])),
    ));
    assert!(t.is_ok());
}

/// Random text through both kinds: no panic, and text comes back byte for byte.
#[test]
fn random_text_round_trips() {
    let spm = SpmVocab::new(&[
        ("a", -1.0, 1),
        ("▁", -2.0, 1),
        ("▁a", -0.5, 1),
        ("<u>", 0.0, 4),
        ("<c>", 0.0, 3),
    ])
    .tokenizer(no_prefix());
    let bpe = small_bpe("exaone-moe", &[("<u>", 4), ("<c>", 3)], &[]);
    let pool: Vec<char> = "a b\t\n\r<>uc/'sSL가힣ㄱ\u{301}🙂é0९\u{0}\u{85}\u{a0}\u{2028}\u{3000}"
        .chars()
        .collect();
    let mut seed = 99u64;
    for _ in 0..500 {
        let mut text = String::new();
        for _ in 0..(seed % 24) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push(pool[(seed >> 33) as usize % pool.len()]);
        }
        for t in [&spm, &bpe] {
            assert_eq!(t.decode(&enc(t, &text, false, false)), text);
            let with_specials = enc(t, &text, true, true);
            assert_eq!(t.decode(&with_specials), text.replace("<c>", ""));
        }
    }
}

/// Catches `from_gguf` not reading what a real GGUF writer produces.
#[test]
fn loads_from_a_gguf_file() {
    let v = SpmVocab::new(&[("a", -1.0, 1), ("▁a", -0.5, 1)]);
    let md = v.metadata(vec![("tokenizer.chat_template", s("{{ messages }}"))]);
    let mut entries: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    entries.sort_by_key(|e| e.0);
    let mut buf = std::io::Cursor::new(Vec::new());
    candle_core::quantized::gguf_file::write(&mut buf, &entries, &[]).expect("write GGUF");
    let path =
        std::env::temp_dir().join(format!("modu-tokenizer-test-{}.gguf", std::process::id()));
    std::fs::write(&path, buf.into_inner()).expect("write temp file");
    let gguf = GgufFile::open(&path);
    let _ = std::fs::remove_file(&path);
    let t = Tokenizer::from_checkpoint(&gguf.expect("open GGUF")).expect("tokenizer from GGUF");
    assert_eq!(t.vocab_size(), v.tokens.len());
    assert_eq!(t.chat_template(), Some("{{ messages }}"));
    assert_eq!(enc(&t, "a", true, false), vec![1, id(&t, "▁a")]);
}

fn test_model(name: &str) -> PathBuf {
    let dir = match std::env::var_os("MODU_TEST_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/modu/test-models"),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-test-models.sh (or set MODU_TEST_MODELS)",
        path.display()
    );
    path
}

/// The real Gemma 3 vocabulary against llama.cpp's own ids (llama-tokenize, BOS added).
#[test]
fn gemma3_matches_llama_cpp() {
    let gguf = GgufFile::open(&test_model("gemma-3-270m-q4_k_m.gguf")).expect("open Gemma 3 GGUF");
    let t = Tokenizer::from_checkpoint(&gguf).expect("Gemma 3 tokenizer");
    let reference = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/gemma3-270m.json"
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reference).unwrap_or_else(|e| panic!("read {reference}: {e}")),
    )
    .expect("reference JSON");
    let cases = json["tokenize"]["cases"]
        .as_array()
        .expect("tokenize.cases");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect();
        assert_eq!(enc(&t, text, true, true), want, "{text:?}");
        assert_eq!(
            enc(&t, text, true, false),
            want,
            "{text:?} without parse_special"
        );
        assert_eq!(t.decode(&want), text, "decode {text:?}");
        let mut d = StreamDecoder::new(&t);
        let mut streamed: String = want.iter().map(|&i| d.push(i)).collect();
        streamed.push_str(&d.finish());
        assert_eq!(streamed, text);
    }
    assert_eq!(t.bos_id(), Some(2));
    assert_eq!(t.eos_id(), Some(1));
    assert!(t.add_bos());
    let end_of_turn = id(&t, "<end_of_turn>");
    assert_eq!(end_of_turn, 106);
    // 212 is "</s>", which llama.cpp's by-name list forces into the set (and makes control).
    assert_eq!(t.end_of_generation_ids(), vec![1, 106, 212]);
    assert_eq!(
        enc(&t, "<start_of_turn>user\nhi<end_of_turn>", false, true)[0],
        105
    );

    // Whole documents (the perplexity texts) come back byte for byte.
    for name in ["ppl_en.txt", "ppl_ko.txt"] {
        let path =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/").to_string() + name;
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let ids = enc(&t, &text, true, false);
        assert!(
            ids.len() > text.chars().count() / 8,
            "{name}: suspiciously few tokens"
        );
        assert_eq!(t.decode(&ids), text, "{name}");
    }
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}

fn exaone_fixture(family: &str) -> (Tokenizer, serde_json::Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers").join(family);
    let model_type = if family == "exaone-moe" { "exaone_moe" } else { family };
    let md = crate::formats::hf_tokenizer::metadata_of_dir(&dir, model_type).expect("tokenizer metadata");
    let t = Tokenizer::from_metadata(&md).expect("tokenizer");
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned();
    assert_eq!(pre.as_deref(), cases["pre"].as_str(), "{family}: pre-tokenizer read from tokenizer.json");
    (t, cases)
}

/// Differential test against HF `tokenizers` (tests/fixtures/make_tokenizer_refs.py): toy
/// byte-level BPEs trained with each EXAONE family's own pre-tokenizer, 392 mixed Korean /
/// English / emoji / digit / whitespace strings each. Where llama.cpp's regex deliberately
/// differs from HF's (`'ſ` under `(?i:'s)`), the fixture records llama.cpp's ids.
#[test]
fn exaone_tokenizers_match_hf_tokenizers() {
    for family in ["exaone", "exaone4", "exaone-moe"] {
        let (t, cases) = exaone_fixture(family);
        let list = cases["cases"].as_array().unwrap();
        assert!(list.len() >= 200, "{family}: {} cases", list.len());
        for c in list {
            let text = c["text"].as_str().unwrap();
            let want_key = if c.get("llama_regex_ids").is_some() { "llama_regex_ids" } else { "ids" };
            let want: Vec<u32> = c[want_key].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
            let got = t.encode(text, false, true).unwrap();
            assert_eq!(got, want, "{family}: {text:?}");
            if c.get("roundtrip").and_then(|r| r.as_bool()) != Some(false) {
                assert_eq!(t.decode_with_special(&got), text, "{family}: decode of {text:?}");
            }
        }
    }
}

/// Any id sequence (specials, partial multi-byte tokens, invalid byte orders included) streamed
/// one id at a time concatenates to the full decode, and no piece ends mid-character.
#[test]
fn stream_decoding_equals_full_decoding_on_exaone_vocabularies() {
    let mut seed = 0x5eed_u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    for family in ["exaone", "exaone4", "exaone-moe"] {
        let (t, _) = exaone_fixture(family);
        let n = t.vocab_size() as u32;
        for _ in 0..1000 {
            let len = 1 + next() % 40;
            let ids: Vec<u32> = (0..len).map(|_| next() % n).collect();
            let mut d = StreamDecoder::new(&t);
            let mut out = String::new();
            for &id in &ids {
                out.push_str(&d.push(id));
            }
            out.push_str(&d.finish());
            assert_eq!(out, t.decode(&ids), "{family}: {ids:?}");
        }
    }
}
