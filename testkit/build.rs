//! Generates the client of the example resource server's demo.v1 service,
//! which the integration tests and benchmarks call.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = "../interceptor/examples/resource_server/proto/demo/v1/echo.proto";
    println!("cargo:rerun-if-changed={demo}");
    let fds = protox::compile([demo], ["../interceptor/examples/resource_server/proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
