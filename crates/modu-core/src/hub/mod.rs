//! Hugging Face hub access: model references, the standard cache layout, resumable downloads.
