//! Tokenizers read from model metadata, and a streaming detokenizer.
