//! Constrained decoding for OpenAI's `response_format`: `{"type": "json_object"}` and
//! `{"type": "json_schema", "json_schema": {"schema": ...}}`.
//!
//! Grammars are compiled by `llguidance` against a token trie of the model's vocabulary (built
//! once per model by [`ConstraintCompiler`]). Each request gets a [`Constraint`], which gives the
//! set of tokens allowed next and advances on the token actually sampled.
//!
//! Every request is bounded: the schema's size, the grammar it compiles to, the lexer work to
//! build it and the work for each token mask all have limits (see [`parser_limits`]); exceeding
//! one is an error (a 400 at compile time, a failed request while generating), never a hang.
//! Whitespace between JSON tokens is allowed but limited to a short run, so a model cannot loop
//! on newlines forever inside the grammar.

use std::sync::Arc;

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::tokenizer::token_bytes::token_bytes;
use crate::tokenizer::Tokenizer;

/// The largest schema accepted, measured as compact JSON.
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;

/// Whitespace allowed between two JSON tokens: at least one and at most this many characters.
const MAX_WHITESPACE_RUN: usize = 24;

/// Error messages passed back to clients are cut to this many bytes.
const MAX_ERROR_BYTES: usize = 2000;

/// The limits every grammar is compiled and run under.
///
/// Costs are llguidance's "fuel" units; its documentation gives about 50k/ms for the initial
/// lexer and 14k/ms for the per-mask lexer work, so the first bounds compile time to roughly
/// 20 ms of lexer work and the second a mask to roughly 15 ms plus the Earley item bound.
pub fn parser_limits() -> ParserLimits {
    ParserLimits {
        // Branching factor of the Earley parser (a row past this is an error).
        max_items_in_row: 2_000,
        // Lexer work to build the grammar's regexes (`maxLength`, `pattern`, enums, ...).
        initial_lexer_fuel: 1_000_000,
        // Lexer work for one token mask.
        step_lexer_fuel: 200_000,
        // Earley items created for one token mask.
        step_max_items: 50_000,
        // Lexer DFA states kept for a request (about 1-2 kB each): caps memory per request.
        max_lexer_states: 50_000,
        // Symbols in the compiled grammar.
        max_grammar_size: 200_000,
        // Keep errors short: no parser dump or grammar text in what goes back to a client.
        verbose_errors: false,
        ..ParserLimits::default()
    }
}

/// JSON compile options, passed to llguidance as the schema's `x-guidance` key (replacing any
/// the client sent).
fn compile_options() -> Value {
    json!({
        "whitespace_flexible": false,
        "whitespace_pattern": format!(r"[\x20\x0A\x0D\x09]{{1,{MAX_WHITESPACE_RUN}}}"),
        "item_separator": ",",
        "key_separator": ":",
        // oneOf is approximated by anyOf rather than rejected (pydantic emits it for unions).
        "coerce_one_of": true,
        // Keywords llguidance cannot enforce are an error, not silently ignored.
        "lenient": false,
    })
}

fn clip(mut msg: String) -> String {
    if msg.len() > MAX_ERROR_BYTES {
        let mut end = MAX_ERROR_BYTES;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push_str("...");
    }
    msg
}

/// Compiles `response_format` grammars for one model's vocabulary. Built once per model; cheap to
/// share (`Send + Sync`, clone is an `Arc` copy).
#[derive(Clone)]
pub struct ConstraintCompiler {
    factory: Arc<ParserFactory>,
    vocab_size: usize,
    /// Tokens that end generation, ascending; allowed once the grammar accepts.
    eos: Arc<[u32]>,
}

impl std::fmt::Debug for ConstraintCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintCompiler")
            .field("vocab_size", &self.vocab_size)
            .field("eos", &self.eos)
            .finish()
    }
}

impl ConstraintCompiler {
    /// Builds the token trie from the tokenizer's vocabulary. Its end-of-generation tokens (EOS,
    /// end of turn, ...) all count as EOS for the grammar.
    pub fn new(tokenizer: &Tokenizer) -> Result<Self> {
        let mut eos = tokenizer.end_of_generation_ids();
        if eos.is_empty() {
            eos.extend(tokenizer.eos_id());
        }
        Self::from_token_bytes(token_bytes(tokenizer), &eos)
    }

    /// Builds from raw token bytes (index = token id; special tokens prefixed with `0xFF`, tokens
    /// that are never generated empty) and the ids that end generation.
    pub fn from_token_bytes(tokens: Vec<Vec<u8>>, eos: &[u32]) -> Result<Self> {
        let n = tokens.len();
        if n == 0 || n >= u32::MAX as usize {
            return Err(Error::Tokenizer(format!(
                "constrained decoding: unusable vocabulary size {n}"
            )));
        }
        let mut eos: Vec<u32> = eos.iter().copied().filter(|&e| (e as usize) < n).collect();
        eos.sort_unstable();
        eos.dedup();
        if eos.is_empty() {
            return Err(Error::Tokenizer(
                "constrained decoding needs an end-of-generation token, and the vocabulary has none"
                    .into(),
            ));
        }
        let info = TokRxInfo::new(n as u32, eos[0]);
        let trie = TokTrie::from(&info, &tokens).with_eos_tokens(&eos);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| {
            Error::Tokenizer(format!(
                "constrained decoding: building the token trie: {e}"
            ))
        })?;
        factory.quiet();
        *factory.limits_mut() = parser_limits();
        Ok(Self {
            factory: Arc::new(factory),
            vocab_size: n,
            eos: eos.into(),
        })
    }

    /// Number of tokens the masks cover (the tokenizer's vocabulary; a model's logits may be
    /// longer, and the extra ids are never allowed).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// `{"type": "json_object"}`: any JSON object.
    pub fn json_object(&self) -> std::result::Result<Constraint, String> {
        self.compile(json!({"type": "object"}))
    }

    /// `{"type": "json_schema"}`: a value valid under `schema`. `Err` is a message for a 400.
    pub fn json_schema(&self, schema: &Value) -> std::result::Result<Constraint, String> {
        let size = serde_json::to_vec(schema).map_or(usize::MAX, |v| v.len());
        if size > MAX_SCHEMA_BYTES {
            return Err(format!(
                "json_schema.schema is {size} bytes; at most {MAX_SCHEMA_BYTES} are accepted"
            ));
        }
        let schema = match schema {
            Value::Object(_) => schema.clone(),
            Value::Bool(true) => json!({}),
            Value::Bool(false) => {
                return Err("json_schema.schema is `false`, which no value satisfies".into())
            }
            _ => return Err("json_schema.schema must be a JSON object".into()),
        };
        self.compile(schema)
    }

    fn compile(&self, mut schema: Value) -> std::result::Result<Constraint, String> {
        if let Some(obj) = schema.as_object_mut() {
            obj.insert("x-guidance".to_string(), compile_options());
        }
        let grammar = TopLevelGrammar::from_json_schema(schema);
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| clip(format!("invalid JSON schema: {e:#}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(clip(format!("invalid JSON schema: {e}")));
        }
        Ok(Constraint {
            matcher,
            vocab_size: self.vocab_size,
            eos: self.eos.clone(),
        })
    }
}

/// One request's grammar state.
pub struct Constraint {
    matcher: Matcher,
    vocab_size: usize,
    eos: Arc<[u32]>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stop_reason", &self.matcher.stop_reason())
            .field("error", &self.matcher.get_error())
            .finish()
    }
}

impl Constraint {
    fn mask(&mut self) -> std::result::Result<SimpleVob, String> {
        self.matcher
            .compute_mask_or_eos()
            .map_err(|e| clip(format!("constrained decoding failed: {e}")))
    }

    /// Which tokens may come next (`len` = vocabulary size). Once the grammar is finished only
    /// the end-of-generation tokens are allowed. `Err` when the grammar is in an error state
    /// (a limit was hit, or a token outside the mask was committed).
    pub fn allowed_tokens(&mut self) -> std::result::Result<Vec<bool>, String> {
        let mask = self.mask()?;
        let mut out = vec![false; self.vocab_size];
        mask.iter_set_entries(|i| {
            if let Some(slot) = out.get_mut(i) {
                *slot = true;
            }
        });
        Ok(out)
    }

    /// Sets every logit the grammar does not allow (and every id past the vocabulary) to
    /// negative infinity.
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> std::result::Result<(), String> {
        let mask = self.mask()?;
        for (i, l) in logits.iter_mut().enumerate() {
            if i >= self.vocab_size || !mask.is_allowed(i as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances the grammar by the sampled token. An end-of-generation token after the grammar
    /// finished is accepted and changes nothing.
    pub fn commit(&mut self, token: u32) -> std::result::Result<(), String> {
        if self.is_finished() && self.eos.binary_search(&token).is_ok() {
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| clip(format!("constrained decoding rejected token {token}: {e}")))
    }

    /// The grammar is complete and nothing but end of generation may follow (an end-of-generation
    /// token was committed, or no further byte is possible).
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped() && !self.matcher.is_error()
    }

    /// Whether the output so far is complete, i.e. end of generation is allowed now (more text
    /// may still be allowed too).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// The error that stopped the grammar, if any.
    pub fn error(&self) -> Option<String> {
        self.matcher.get_error().map(clip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All 256 bytes, then a few multi-byte and special tokens.
    const EOS: u32 = 256;
    const USER: u32 = 257;
    const UNUSED: u32 = 258;

    fn vocab() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        v.push(b"\xFF<|end|>".to_vec()); // EOS
        v.push(b"\xFF<|user|>".to_vec()); // another special token
        v.push(Vec::new()); // never generated
        for t in [&b"{\""[..], b"\":", b"true", b"\", \"", b"12", b"  "] {
            v.push(t.to_vec());
        }
        v
    }

    fn compiler() -> ConstraintCompiler {
        ConstraintCompiler::from_token_bytes(vocab(), &[EOS]).expect("compiler")
    }

    struct Walk {
        text: Vec<u8>,
        tokens: Vec<u32>,
        finished: bool,
    }

    /// Picks the first end-of-generation token allowed, else the first of `prefs` allowed (by
    /// bytes), else the lowest allowed id that does not start with whitespace, else the lowest.
    fn choose(allowed: &[bool], vocab: &[Vec<u8>], eos: &[u32], prefs: &[&[u8]]) -> Option<u32> {
        if let Some(&e) = eos.iter().find(|&&e| allowed[e as usize]) {
            return Some(e);
        }
        for p in prefs {
            if let Some(i) = (0..vocab.len()).find(|&i| allowed[i] && vocab[i] == *p) {
                return Some(i as u32);
            }
        }
        (0..vocab.len())
            .find(|&i| allowed[i] && vocab[i].first().is_some_and(|b| !b.is_ascii_whitespace()))
            .or_else(|| (0..vocab.len()).find(|&i| allowed[i]))
            .map(|i| i as u32)
    }

    /// Lets the mask drive generation for at most `max_steps` tokens.
    fn walk(
        c: &mut Constraint,
        vocab: &[Vec<u8>],
        eos: &[u32],
        prefs: &[&[u8]],
        max_steps: usize,
    ) -> std::result::Result<Walk, String> {
        let mut w = Walk {
            text: Vec::new(),
            tokens: Vec::new(),
            finished: false,
        };
        for _ in 0..max_steps {
            if c.is_finished() {
                break;
            }
            let allowed = c.allowed_tokens()?;
            assert_eq!(allowed.len(), vocab.len());
            for (i, b) in vocab.iter().enumerate() {
                if allowed[i] && !eos.contains(&(i as u32)) {
                    assert!(
                        !b.is_empty() && b[0] != 0xFF,
                        "token {i} ({b:?}) must never be allowed"
                    );
                }
            }
            let t = choose(&allowed, vocab, eos, prefs).ok_or("empty mask")?;
            c.commit(t)?;
            w.tokens.push(t);
            if !eos.contains(&t) {
                w.text.extend_from_slice(&vocab[t as usize]);
            }
        }
        w.finished = c.is_finished();
        Ok(w)
    }

    const CLOSERS: &[&[u8]] = &[b"\"", b"}", b"]"];
    const MULTI: &[&[u8]] = &[b"\", \"", b"\":", b"{\"", b"\"", b"}", b"]", b"true", b"12"];

    fn person_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 0}
            },
            "required": ["name", "age"],
            "additionalProperties": false
        })
    }

    fn check_person(text: &[u8]) {
        let v: Value = serde_json::from_slice(text)
            .unwrap_or_else(|e| panic!("{:?} is not JSON: {e}", String::from_utf8_lossy(text)));
        let obj = v.as_object().expect("an object");
        assert_eq!(obj.len(), 2, "{v}");
        assert!(obj["name"].is_string(), "{v}");
        assert!(obj["age"].as_u64().is_some(), "{v}");
    }

    #[test]
    fn compiler_is_send_and_sync() {
        fn sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        sync::<ConstraintCompiler>();
        send::<Constraint>();
    }

    #[test]
    fn schema_walks_produce_valid_json() {
        let c = compiler();
        let v = vocab();
        for prefs in [CLOSERS, MULTI] {
            let mut con = c.json_schema(&person_schema()).expect("schema compiles");
            let w = walk(&mut con, &v, &[EOS], prefs, 500).expect("walk");
            assert!(w.finished, "{:?}", String::from_utf8_lossy(&w.text));
            check_person(&w.text);
        }
        // The multi-byte walk really used multi-byte tokens.
        let mut con = c.json_schema(&person_schema()).expect("schema compiles");
        let w = walk(&mut con, &v, &[EOS], MULTI, 500).expect("walk");
        assert!(w.tokens.iter().any(|&t| t > UNUSED), "{:?}", w.tokens);
    }

    #[test]
    fn json_object_walks_produce_objects() {
        let c = compiler();
        let v = vocab();
        for prefs in [CLOSERS, MULTI] {
            let mut con = c.json_object().expect("json_object compiles");
            let w = walk(&mut con, &v, &[EOS], prefs, 500).expect("walk");
            assert!(w.finished);
            let val: Value = serde_json::from_slice(&w.text).expect("JSON");
            assert!(val.is_object(), "{val}");
        }
    }

    #[test]
    fn eos_only_when_accepting_and_wrong_tokens_fail() {
        let c = compiler();
        let mut con = c.json_schema(&person_schema()).expect("schema compiles");
        let allowed = con.allowed_tokens().expect("mask");
        assert!(!allowed[EOS as usize]);
        assert!(allowed[b'{' as usize]);
        assert!(!allowed[b'[' as usize]);
        assert!(!allowed[b' ' as usize], "no whitespace before the value");
        assert!(!allowed[USER as usize] && !allowed[UNUSED as usize]);
        let n = vocab().len();
        let mut logits = vec![0.0f32; n + 3];
        con.mask_logits(&mut logits).expect("mask");
        assert_eq!(logits[b'{' as usize], 0.0);
        assert_eq!(logits[b'[' as usize], f32::NEG_INFINITY);
        assert!(logits[n..].iter().all(|l| *l == f32::NEG_INFINITY));

        assert!(con.commit(b'[' as u32).is_err());
        assert!(con.allowed_tokens().is_err(), "the error state sticks");
        assert!(con.error().is_some());
        assert!(!con.is_finished());
    }

    #[test]
    fn whitespace_runs_are_bounded() {
        let c = compiler();
        let mut con = c.json_object().expect("json_object compiles");
        con.commit(b'{' as u32).expect("{");
        let mut n = 0;
        while con.allowed_tokens().expect("mask")[b'\n' as usize] {
            con.commit(b'\n' as u32).expect("newline");
            n += 1;
            assert!(n <= MAX_WHITESPACE_RUN, "whitespace run not bounded");
        }
        assert!(n >= 1);
        let w = walk(&mut con, &vocab(), &[EOS], CLOSERS, 500).expect("walk");
        assert!(w.finished);
    }

    #[test]
    fn invalid_schemas_are_errors() {
        let c = compiler();
        for bad in [
            json!({"type": 5}),
            json!({"type": "object", "properties": {"a": {"type": "no-such-type"}}}),
            json!({"type": "string", "format": "no-such-format"}),
            json!({"type": "integer", "minimum": 5, "maximum": 1}),
            json!({"$ref": "https://example.com/schema.json"}),
            json!(false),
            json!(42),
        ] {
            assert!(c.json_schema(&bad).is_err(), "{bad} should be rejected");
        }
        let huge = json!({"enum": ["x".repeat(MAX_SCHEMA_BYTES)]});
        let e = c.json_schema(&huge).expect_err("too large");
        assert!(e.contains("bytes"), "{e}");
        // `true` accepts any JSON value.
        assert!(c.json_schema(&json!(true)).is_ok());
    }

    /// A hostile schema is rejected, or every mask stays cheap and the walk ends in bounded steps.
    fn bounded(c: &ConstraintCompiler, schema: &Value, max_steps: usize) {
        let t0 = std::time::Instant::now();
        let mut con = match c.json_schema(schema) {
            Ok(con) => con,
            Err(e) => {
                assert!(!e.is_empty());
                return;
            }
        };
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "compiling took {:?}",
            t0.elapsed()
        );
        match walk(&mut con, &vocab(), &[EOS], CLOSERS, max_steps) {
            Ok(w) => {
                assert!(w.finished, "walk did not end in {max_steps} steps");
                let _: Value = serde_json::from_slice(&w.text).expect("JSON");
            }
            // A limit hit while generating is an error, not a hang.
            Err(e) => assert!(!e.is_empty()),
        }
    }

    #[test]
    fn hostile_schemas_are_bounded() {
        let c = compiler();
        let string = json!({"type": "string", "maxLength": 65536});
        let mut arr = string;
        for _ in 0..3 {
            arr = json!({"type": "array", "minItems": 10, "maxItems": 1000, "items": arr});
        }
        bounded(&c, &arr, 20_000);

        let mut deep = json!({"type": "integer"});
        for _ in 0..100 {
            deep = json!({
                "type": "object",
                "properties": {"a": deep},
                "required": ["a"],
                "additionalProperties": false
            });
        }
        bounded(&c, &deep, 5_000);

        let regex = json!({"type": "string", "pattern": "^(a{1000}){1000}$"});
        let t0 = std::time::Instant::now();
        if let Ok(mut con) = c.json_schema(&regex) {
            // Far too long to walk; a handful of masks must still be cheap or fail cleanly.
            let _ = walk(&mut con, &vocab(), &[EOS], CLOSERS, 20);
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(30));

        let wide: serde_json::Map<String, Value> = (0..2000)
            .map(|i| {
                (
                    format!("k{i}"),
                    json!({"type": "string", "maxLength": 65536}),
                )
            })
            .collect();
        bounded(&c, &json!({"type": "object", "properties": wide}), 20_000);
    }

    /// The tokenizer's own decoding of a walk, end-of-generation tokens left out.
    /// For each preference list: a walk under the person schema finishes, its bytes are what the
    /// tokenizer decodes from its tokens, and it validates.
    fn person_walks_are_valid(c: &ConstraintCompiler, tok: &Tokenizer, prefs: &[&[&[u8]]]) {
        let bytes = token_bytes(tok);
        let eos = tok.end_of_generation_ids();
        for &p in prefs {
            let mut con = c.json_schema(&person_schema()).expect("schema");
            let w = walk(&mut con, &bytes, &eos, p, 500).expect("walk");
            assert!(w.finished);
            assert_eq!(decode_text(tok, &w, &eos).as_bytes(), &w.text[..]);
            check_person(&w.text);
        }
    }

    fn decode_text(tok: &Tokenizer, w: &Walk, eos: &[u32]) -> String {
        let ids: Vec<u32> = w
            .tokens
            .iter()
            .copied()
            .filter(|t| !eos.contains(t))
            .collect();
        tok.decode(&ids)
    }

    #[test]
    fn works_with_a_tokenizer_vocabulary() {
        use candle_core::quantized::gguf_file::Value as Gv;
        use std::collections::HashMap;

        // SPM layout: <unk>, <s>, </s>, 256 byte tokens, then a few pieces.
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types: Vec<i32> = vec![2, 3, 3];
        for b in 0..256 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for t in ["{\"", "\":", "▁\"", "name", "age", "<end_of_turn>"] {
            tokens.push(t.to_string());
            types.push(if t.starts_with('<') { 3 } else { 1 });
        }
        let mut md = HashMap::new();
        md.insert(
            "tokenizer.ggml.model".to_string(),
            Gv::String("llama".into()),
        );
        md.insert(
            "tokenizer.ggml.tokens".to_string(),
            Gv::Array(tokens.into_iter().map(Gv::String).collect()),
        );
        md.insert(
            "tokenizer.ggml.token_type".to_string(),
            Gv::Array(types.into_iter().map(Gv::I32).collect()),
        );
        let tok = Tokenizer::from_metadata(&md).expect("tokenizer");
        let c = ConstraintCompiler::new(&tok).expect("compiler");
        assert_eq!(c.vocab_size(), tok.vocab_size());
        person_walks_are_valid(&c, &tok, &[CLOSERS, MULTI]);
    }

    #[test]
    fn works_with_a_byte_level_bpe_vocabulary() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tokenizers/exaone");
        let md = crate::formats::hf_tokenizer::metadata_of_dir(&dir, "exaone")
            .expect("tokenizer metadata");
        let tok = Tokenizer::from_metadata(&md).expect("tokenizer");
        let c = ConstraintCompiler::new(&tok).expect("compiler");
        person_walks_are_valid(&c, &tok, &[CLOSERS, MULTI]);
    }

    /// Gemma 3's 262k-token vocabulary, when the test model is present.
    #[test]
    fn works_with_gemma3_vocabulary() {
        let dir = match std::env::var_os("MODU_TEST_MODELS") {
            Some(d) => std::path::PathBuf::from(d),
            None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/modu/test-models"),
        };
        let path = dir.join("gemma-3-270m-q4_k_m.gguf");
        if !path.is_file() {
            eprintln!("skipping: {} is missing", path.display());
            return;
        }
        let gguf = crate::formats::gguf::GgufFile::open(&path).expect("open GGUF");
        let tok = Tokenizer::from_checkpoint(&gguf).expect("tokenizer");
        let t0 = std::time::Instant::now();
        let c = ConstraintCompiler::new(&tok).expect("compiler");
        eprintln!(
            "ConstraintCompiler::new on {} tokens: {:?}",
            tok.vocab_size(),
            t0.elapsed()
        );
        person_walks_are_valid(&c, &tok, &[MULTI]);
    }
}
