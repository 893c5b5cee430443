//! Generates the messages (prost) and, from the same descriptors, the
//! shape table the frame reader uses to bound what a frame decodes to
//! (`frame.rs`): which fields hold nested messages, map entries or packed
//! numbers.

use std::fmt::Write;
use std::path::PathBuf;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/shoal.proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds_path = out.join("shoal.fds");
    prost_build::Config::new()
        // Payloads as `bytes::Bytes`: chunk data moves without copies.
        .bytes(["."])
        // `prost::Name`: the frame reader looks a message's shape up by name.
        .enable_type_names()
        .file_descriptor_set_path(&fds_path)
        .compile_protos(&["proto/shoal.proto"], &["proto"])?;
    let fds = FileDescriptorSet::decode(std::fs::read(&fds_path)?.as_slice())?;
    let (mut rows, mut sizes) = (String::new(), String::new());
    for file in &fds.file {
        let package = format!(".{}.", file.package());
        for msg in &file.message_type {
            shape(&mut rows, &package, msg);
            let _ = writeln!(
                sizes,
                "    ({name:?}, std::mem::size_of::<crate::v1::{name}>()),",
                name = msg.name()
            );
        }
    }
    let table = format!(
        "/// (message, field number, what the field holds), generated from shoal.proto.\n\
         pub(crate) const SHAPE: &[(&str, u32, Field)] = &[\n{rows}];\n\
         /// Every message and its size in memory.\n\
         #[cfg(test)]\n\
         pub(crate) const SIZES: &[(&str, usize)] = &[\n{sizes}];\n"
    );
    std::fs::write(out.join("shape.rs"), table)?;
    Ok(())
}

/// One row per field of `msg` that decodes to more than its wire bytes:
/// nested messages, map entries and packed repeated numbers. Messages are
/// named as prost's `Name::NAME` (the protocol has one package, and no
/// nested messages but map entries).
fn shape(rows: &mut String, package: &str, msg: &DescriptorProto) {
    let name = msg.name();
    for f in &msg.field {
        let field = match f.r#type() {
            Type::Message => {
                let nested = f
                    .type_name()
                    .strip_prefix(package)
                    .expect("messages of this package");
                let is_map = msg.nested_type.iter().any(|n| {
                    format!("{name}.{}", n.name()) == nested
                        && n.options.as_ref().is_some_and(|o| o.map_entry())
                });
                if is_map {
                    "Field::MapEntry".to_string()
                } else {
                    format!("Field::Message({nested:?})")
                }
            }
            Type::String | Type::Bytes | Type::Group => continue,
            _ if f.label() == Label::Repeated => "Field::Packed".to_string(),
            _ => continue,
        };
        let _ = writeln!(rows, "    ({name:?}, {}, {field}),", f.number());
    }
}
