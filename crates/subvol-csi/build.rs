//! Compiles proto/csi.proto at build time with protox (a protobuf compiler
//! written in Rust), so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = protox::compile(["proto/csi.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(files)?;
    println!("cargo:rerun-if-changed=proto/csi.proto");
    Ok(())
}
