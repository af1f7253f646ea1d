//! Compiles the tokend.v1 API (`proto/tokend/v1`, shipped with this crate so
//! that it packages on its own) without a system `protoc`: the messages and
//! the client always; with the `token-service` feature also the server, with
//! a codec that answers an undecodable request INVALID_ARGUMENT, and the
//! descriptor set that server reflection serves. Also the demo.v1 service of
//! the example resource server.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let tokend = "proto/tokend/v1/token_service.proto";
    println!("cargo:rerun-if-changed={tokend}");
    let fds = protox::compile([tokend], ["proto"])?;
    // The client's `connect` needs tonic's channel: only with `client`.
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .compile_fds(fds.clone())?;
    if env::var_os("CARGO_FEATURE_TOKEN_SERVICE").is_some() {
        fs::write(out_dir.join("tokend_descriptor.bin"), fds.encode_to_vec())?;
        let server_dir = out_dir.join("server");
        fs::create_dir_all(&server_dir)?;
        tonic_prost_build::configure()
            .build_client(false)
            .out_dir(&server_dir)
            .extern_path(".tokend.v1", "crate::proto::tokend::v1")
            .codec_path("crate::codec::RequestCodec")
            .compile_fds(fds)?;
    }

    let demo = "proto/demo/v1/echo.proto";
    println!("cargo:rerun-if-changed={demo}");
    let fds = protox::compile([demo], ["proto"])?;
    fs::write(out_dir.join("demo_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("tokend_interceptor::RequestCodec")
        .compile_fds(fds.clone())?;
    // Its client (RelayEcho calls another instance), with tonic's own
    // codec: an undecodable response is not the caller's mistake.
    let demo_client = out_dir.join("demo_client");
    fs::create_dir_all(&demo_client)?;
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(&demo_client)
        .extern_path(".demo.v1", "crate::demo")
        .compile_fds(fds)?;
    Ok(())
}
