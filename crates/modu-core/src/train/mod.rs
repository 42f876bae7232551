//! Few-shot adaptation: LoRA adapters trained on the CPU and stored in Hugging Face PEFT's
//! layout.
//!
//! - `lora`: adapters (PEFT names and files, initialisation, merging into a checkpoint);
//! - `model`: a differentiable forward pass over a frozen base;
//! - `data`: JSONL examples, tokenized with the loss on the answers only;
//! - `trainer`: AdamW, the learning-rate schedule, accumulation, checkpoints and resuming.

pub mod data;
pub mod lora;
pub mod model;
pub mod trainer;
