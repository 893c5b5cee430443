fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/shoal.proto");
    prost_build::Config::new().compile_protos(&["proto/shoal.proto"], &["proto"])
}
