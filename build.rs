//! Compiles `proto/` into the tokend.v1 server and client, and writes the
//! descriptor set that server reflection serves. Uses protox, so a fresh
//! machine needs no system `protoc`.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let api = "proto/tokend/v1/token_service.proto";
    println!("cargo:rerun-if-changed={api}");
    let fds = protox::compile([api], ["proto"])?;
    fs::write(out_dir.join("tokend_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;

    // The example resource service's client, for the integration tests only.
    let demo = "interceptor/proto/demo/v1/echo.proto";
    println!("cargo:rerun-if-changed={demo}");
    let fds = protox::compile([demo], ["interceptor/proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
