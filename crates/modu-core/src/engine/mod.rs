//! The generation engine: KV cache, sampler, constrained decoding, generation loop, scheduler,
//! perplexity.

pub mod constraint;
pub mod generate;
pub mod kv_cache;
pub mod kl_divergence;
pub mod perplexity;
pub mod sampler;
pub mod scheduler;

pub use generate::{FinishReason, GenerateParams, Generation, Session};
pub use sampler::{Sampler, SamplingParams};
