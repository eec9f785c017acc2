//! wix-ingest: the edge to Wix.
#![forbid(unsafe_code)]

pub mod wix;
