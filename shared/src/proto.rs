//! Generated protobuf / gRPC types for `proto/` (packages `wixprint.*.v1`).

#[allow(clippy::all, missing_docs)]
pub mod wixprint {
    pub mod order {
        pub mod v1 {
            tonic::include_proto!("wixprint.order.v1");
        }
    }
    pub mod print {
        pub mod v1 {
            tonic::include_proto!("wixprint.print.v1");
        }
    }
    pub mod ingest {
        pub mod v1 {
            tonic::include_proto!("wixprint.ingest.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("wixprint.events.v1");
        }
    }
}

pub use wixprint::{events::v1 as events, ingest::v1 as ingest, order::v1 as order, print::v1 as print};

/// Encoded descriptor set of every wixprint proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("wixprint_descriptor");
