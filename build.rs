//! Generates tokend's side of the tokend.v1 API from `proto/` (the one
//! source of truth, shipped in this package), without a system `protoc`:
//! the `TokenService` server, with the interceptor's codec (an undecodable
//! request is INVALID_ARGUMENT, not INTERNAL), and the encoded descriptor
//! set that server reflection serves. The messages are not generated here:
//! the server uses tokend-interceptor's (`extern_path`), the very types its
//! client and verifier use, so the two crates cannot disagree on the wire.
//!
//! Also the tokend.admin.v1 API (operators' administration), whole:
//! messages, server and client, since nothing outside this crate speaks it.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let api = "proto/tokend/v1/token_service.proto";
    println!("cargo:rerun-if-changed={api}");
    let fds = protox::compile([api], ["proto"])?;
    fs::write(out_dir.join("tokend_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".tokend.v1", "::tokend_interceptor::proto::tokend::v1")
        .codec_path("::tokend_interceptor::server::RequestCodec")
        .compile_fds(fds)?;

    let admin = "proto/tokend/admin/v1/admin_service.proto";
    println!("cargo:rerun-if-changed={admin}");
    let fds = protox::compile([admin], ["proto"])?;
    fs::write(out_dir.join("admin_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .codec_path("::tokend_interceptor::server::RequestCodec")
        .compile_fds(fds)?;
    Ok(())
}
