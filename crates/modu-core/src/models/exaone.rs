//! EXAONE 3.0 / 3.5 / Deep (GGUF arch `exaone`), spec §2.1.
//!
//! The forward pass is Llama-3's: pre-norm, GQA, SwiGLU, no embedding scaling. Only tensor names
//! differ in HF checkpoints; in GGUF they are Llama's. RoPE is NeoX; llama3 scaling arrives as the
//! `rope_freqs` tensor (spec §2.0, §4). head_dim may differ from hidden/heads (2.4B: 80).

use candle_core::Device;

use super::layers::{LoadOptions, RopeStyle};
use super::llama;
use crate::error::Result;
use crate::formats::checkpoint::Checkpoint;

pub fn from_checkpoint(g: &dyn Checkpoint, device: &Device, opts: LoadOptions) -> Result<llama::Model> {
    let mut cfg = llama::Config::from_checkpoint(g, "exaone", RopeStyle::Neox, device)?;
    // EXAONE 3.x checkpoints without rope.freq_base use 500 000 (3.0); transformers' default too.
    if g.get("exaone.rope.freq_base").is_none() {
        cfg.rope_theta = 500_000.0;
    }
    llama::new(&cfg, g, device, opts)
}
