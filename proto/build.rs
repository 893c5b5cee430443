fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/shoal.proto");
    prost_build::Config::new()
        // Payloads as `bytes::Bytes`: chunk data moves without copies.
        .bytes(["."])
        .compile_protos(&["proto/shoal.proto"], &["proto"])
}
