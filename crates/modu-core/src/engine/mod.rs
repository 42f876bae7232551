//! The generation engine: KV cache, sampler, generation loop, perplexity.
