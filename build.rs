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
    // The messages and the server, whose codec answers an undecodable request
    // INVALID_ARGUMENT (tonic's says INTERNAL)...
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("tokend_interceptor::codec::RequestCodec")
        .compile_fds(fds.clone())?;
    // ...and the client (for tests and benchmarks), with tonic's codec, over
    // the same messages.
    let client_dir = out_dir.join("client");
    fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(&client_dir)
        .extern_path(".tokend.v1", "crate::proto::tokend::v1")
        .compile_fds(fds)?;

    // The example resource service's client, for the integration tests only.
    let demo = "interceptor/proto/demo/v1/echo.proto";
    println!("cargo:rerun-if-changed={demo}");
    let fds = protox::compile([demo], ["interceptor/proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
