//! Compiles the Nomad / go-plugin protobuf definitions under `proto/` into Rust
//! (prost messages plus tonic clients and servers) in `OUT_DIR`.
//!
//! The pure-Rust `protox` compiler parses the `.proto` files, so no `protoc`
//! binary is needed. The generated code is included by `src/proto.rs`.

use std::path::PathBuf;

/// Every `.proto` file we compile, relative to the `proto/` include root.
const PROTOS: &[&str] = &[
    "plugin/grpc_controller.proto",
    "plugin/grpc_stdio.proto",
    "plugin/grpc_broker.proto",
    "hclspec/hcl_spec.proto",
    "structs/attribute.proto",
    "structs/recoverable_error.proto",
    "base/base.proto",
    "drivers/driver.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?;

    // Keep the encoded descriptor set around (e.g. for gRPC reflection or tests).
    std::fs::write(
        out_dir.join("file_descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // prost's codec with a small first buffer per call (src/grpc/codec.rs)
        .codec_path("crate::grpc::codec::SmallCodec")
        .compile_fds(compiler.file_descriptor_set())?;

    Ok(())
}
