//! Generates the tokend.v1 client (key sync, token source) and the demo.v1
//! service of the example, without a system `protoc`.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let tokend = "../proto/tokend/v1/token_service.proto";
    println!("cargo:rerun-if-changed={tokend}");
    let fds = protox::compile([tokend], ["../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;

    let demo = "proto/demo/v1/echo.proto";
    println!("cargo:rerun-if-changed={demo}");
    let fds = protox::compile([demo], ["proto"])?;
    fs::write(out_dir.join("demo_descriptor.bin"), fds.encode_to_vec())?;
    // A request body that does not decode is INVALID_ARGUMENT, not INTERNAL.
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("tokend_interceptor::codec::RequestCodec")
        .compile_fds(fds)?;
    Ok(())
}
