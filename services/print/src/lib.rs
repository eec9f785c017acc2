//! wix-print: the edge to paper.
#![forbid(unsafe_code)]

pub mod receipt;
