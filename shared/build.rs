//! Compiles `proto/` into Rust (prost + tonic) and writes one descriptor set for reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_root = PathBuf::from("../proto");
    let files = [
        "wixprint/order/v1/order.proto",
        "wixprint/print/v1/print.proto",
        "wixprint/ingest/v1/ingest.proto",
        "wixprint/events/v1/events.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed=../proto/{f}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("wixprint_descriptor.bin"))
        .compile_protos(&files.iter().map(|f| proto_root.join(f)).collect::<Vec<_>>(), &[proto_root])?;
    Ok(())
}
