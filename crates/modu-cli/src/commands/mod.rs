//! One module per group of subcommands.

pub mod bench;
pub mod generate;
pub mod inspect;
pub mod perplexity;
