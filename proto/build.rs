fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc, so a fresh machine needs nothing installed.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::configure()
        .file_descriptor_set_path(out.join("warmpool_descriptor.bin"))
        .compile_protos(&["warmpool/v1/warmpool.proto"], &["."])?;
    println!("cargo:rerun-if-changed=warmpool/v1/warmpool.proto");
    Ok(())
}
