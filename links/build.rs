//! Compiles the click event schema (`proto/`) into Rust types with a pure
//! Rust protobuf compiler, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const SCHEMA: &str = "proto/shortener/clicks/v1/click.proto";
    println!("cargo:rerun-if-changed={SCHEMA}");
    let descriptors = protox::compile([SCHEMA], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
