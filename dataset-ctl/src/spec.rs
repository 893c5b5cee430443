//! Dataset manifests for `dataset-ctl apply -f`, in the spirit of Fluid's
//! Dataset resource.
//!
//! ```yaml
//! apiVersion: shoal.io/v1alpha1
//! kind: Dataset
//! metadata:
//!   name: imagenet
//! spec:
//!   source: s3://training/imagenet
//!   s3Endpoint: http://minio.local:9000
//!   region: us-east-1
//!   chunkSize: 4MiB
//!   tierPolicy: MemoryThenDisk   # or DiskOnly, MemoryOnly
//!   pin: false
//! ```

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use shoal_proto::cli::{parser_error, quote};
use shoal_proto::v1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    source: String,
    #[serde(default)]
    s3_endpoint: String,
    #[serde(default)]
    region: String,
    chunk_size: Option<String>,
    tier_policy: Option<String>,
    #[serde(default)]
    pin: bool,
}

pub const API_VERSION: &str = "shoal.io/v1alpha1";

/// Parses a tier policy name as written in specs and flags.
pub fn parse_policy(s: &str) -> Result<v1::TierPolicy> {
    Ok(
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "memorythendisk" => v1::TierPolicy::MemoryThenDisk,
            "diskonly" => v1::TierPolicy::DiskOnly,
            "memoryonly" => v1::TierPolicy::MemoryOnly,
            _ => bail!(
                "unknown tier policy {}: use MemoryThenDisk, DiskOnly or MemoryOnly",
                quote(s)
            ),
        },
    )
}

/// A YAML error as one short line.
fn yaml_error(e: serde_yaml::Error) -> anyhow::Error {
    anyhow!(parser_error(&e))
}

/// Parses every document of a YAML stream into dataset specs. An error is
/// one short line, however long the value it complains about.
pub fn parse(text: &str, origin: &str) -> Result<Vec<v1::DatasetSpec>> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(yaml_error)
            .with_context(|| format!("{origin}: malformed YAML in document {}", i + 1))?;
        if value.is_null() {
            continue;
        }
        let d: Document = serde_yaml::from_value(value)
            .map_err(yaml_error)
            .with_context(|| format!("{origin}: invalid Dataset in document {}", i + 1))?;
        if d.kind != "Dataset" {
            bail!(
                "{origin}: kind {} is not supported (expected Dataset)",
                quote(&d.kind)
            );
        }
        if d.api_version != API_VERSION {
            bail!(
                "{origin}: apiVersion {} is not supported (expected {API_VERSION})",
                quote(&d.api_version)
            );
        }
        let chunk_size = match &d.spec.chunk_size {
            Some(s) => shoal_proto::units::parse_size(s)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("{origin}: spec.chunkSize"))?,
            None => 0,
        };
        let tier_policy = match &d.spec.tier_policy {
            Some(p) => parse_policy(p).with_context(|| format!("{origin}: spec.tierPolicy"))?,
            None => v1::TierPolicy::MemoryThenDisk,
        };
        out.push(v1::DatasetSpec {
            name: d.metadata.name,
            source: d.spec.source,
            s3_endpoint: d.spec.s3_endpoint,
            region: d.spec.region,
            chunk_size,
            tier_policy: tier_policy as i32,
            pin: d.spec.pin,
        });
    }
    if out.is_empty() {
        bail!("{origin}: no Dataset documents found");
    }
    Ok(out)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documents_and_refuses_typos() {
        let text = "apiVersion: shoal.io/v1alpha1\nkind: Dataset\nmetadata: {name: a}\nspec:\n  source: file:///x\n  chunkSize: 1MiB\n---\napiVersion: shoal.io/v1alpha1\nkind: Dataset\nmetadata: {name: b}\nspec: {source: s3://bkt/p, tierPolicy: DiskOnly, pin: true}\n";
        let specs = parse(text, "t.yaml").unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].chunk_size, 1 << 20);
        assert_eq!(specs[1].tier_policy, v1::TierPolicy::DiskOnly as i32);
        assert!(specs[1].pin);
        let typo = text.replace("chunkSize", "chunkSise");
        assert!(format!("{:#}", parse(&typo, "t.yaml").unwrap_err()).contains("chunkSise"));
        assert!(parse("a: [", "t.yaml").is_err());
        assert!(parse(&text.replace("kind: Dataset", "kind: Pod"), "t.yaml").is_err());
    }
}
