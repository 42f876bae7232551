//! One module per group of subcommands.

pub mod bench;
pub mod convert;
pub mod generate;
pub mod inspect;
pub mod perplexity;
pub mod serve;
pub mod tune;
