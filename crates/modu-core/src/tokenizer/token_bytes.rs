//! The bytes each token stands for, in the form a grammar engine's token trie wants.
//!
//! Text tokens give the exact bytes they add to the output ([`Tokenizer::token_bytes`]: SPM pieces
//! with U+2581 turned into spaces, `<0xNN>` byte tokens as their byte, byte-level BPE pieces
//! mapped back through GPT-2's byte table, user-defined tokens as their text).
//!
//! Control tokens and every end-of-generation token are marked special: a `0xFF` byte followed by
//! the token's text (`<eos>` becomes `\xFF<eos>`). `0xFF` never occurs in UTF-8, so a grammar over
//! text can never produce one of these by accident; the engine allows end-of-generation tokens
//! explicitly once the grammar accepts.
//!
//! Tokens that render as nothing (unknown, unused, undefined types) get no bytes and are never
//! allowed by a grammar.

use super::Tokenizer;

/// The prefix byte that marks a special token.
pub const SPECIAL_TOKEN_MARKER: u8 = 0xFF;

/// The bytes of every token, indexed by id (see the module docs for special tokens).
pub fn token_bytes(tok: &Tokenizer) -> Vec<Vec<u8>> {
    (0..tok.vocab_size() as u32)
        .map(|id| {
            if tok.is_control(id) || tok.is_end_of_generation(id) {
                let text = tok.token_text(id).unwrap_or_default();
                let mut b = Vec::with_capacity(text.len() + 1);
                b.push(SPECIAL_TOKEN_MARKER);
                b.extend_from_slice(text.as_bytes());
                b
            } else {
                tok.token_bytes(id).to_vec()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::Value;

    use super::*;

    fn spm_tokenizer() -> Tokenizer {
        // <unk>, <s>, </s>, 256 byte tokens, then pieces with their token types
        // (1 normal, 3 control, 4 user-defined, 5 unused).
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types: Vec<i32> = vec![2, 3, 3];
        for b in 0..256 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for (t, ty) in [
            ("▁hello", 1),
            ("{\"", 1),
            ("<end_of_turn>", 3),
            ("<tag>", 4),
            ("<unused0>", 5),
            ("한", 1),
        ] {
            tokens.push(t.to_string());
            types.push(ty);
        }
        let mut md = HashMap::new();
        md.insert(
            "tokenizer.ggml.model".to_string(),
            Value::String("llama".into()),
        );
        md.insert(
            "tokenizer.ggml.tokens".to_string(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        );
        md.insert(
            "tokenizer.ggml.token_type".to_string(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        );
        Tokenizer::from_metadata(&md).expect("test vocabulary should load")
    }

    #[test]
    fn spm_pieces_bytes_and_specials() {
        let t = spm_tokenizer();
        let bytes = token_bytes(&t);
        assert_eq!(bytes.len(), t.vocab_size());
        let id = |s: &str| t.token_to_id(s).expect("token in vocabulary") as usize;

        // Unknown renders as nothing; BOS/EOS are control.
        assert!(bytes[0].is_empty());
        assert_eq!(bytes[1], b"\xFF<s>");
        assert_eq!(bytes[2], b"\xFF</s>");
        // Byte tokens are their byte, including 0xFF itself.
        assert_eq!(bytes[3 + 0x41], vec![0x41]);
        assert_eq!(bytes[3 + 0xFF], vec![0xFF]);
        assert_eq!(bytes[id("▁hello")], b" hello");
        assert_eq!(bytes[id("{\"")], b"{\"");
        assert_eq!(bytes[id("한")], "한".as_bytes());
        // <end_of_turn> ends generation, so it is special whatever its type says.
        assert_eq!(bytes[id("<end_of_turn>")], b"\xFF<end_of_turn>");
        // User-defined tokens render as their text; unused ones as nothing.
        assert_eq!(bytes[id("<tag>")], b"<tag>");
        assert!(bytes[id("<unused0>")].is_empty());
    }
}
