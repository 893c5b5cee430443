//! Deployment specs (YAML or JSON) and their validation.
//!
//! Unknown fields are errors (a typo must not silently drop a setting),
//! and every check names the field, so `scheduler apply` refuses a bad spec
//! with one line and changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_proto::cli::{parser_error, quote};

/// `kind` of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Runs to completion; a failed replica is retried up to `retries`.
    Job,
    /// Keeps `replicas` running; replaces any that exit or are lost.
    ReplicaSet,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Gpu {
    /// Empty accepts any model.
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DatasetMount {
    pub name: String,
    /// 0 = the latest version when the replica is placed.
    #[serde(default)]
    pub version: u64,
    #[serde(default = "default_mount")]
    pub mount_path: String,
}

fn default_mount() -> String {
    "/data".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    /// A command that exits 0 when the replica is ready.
    #[serde(default)]
    pub command: Vec<String>,
    /// Or an HTTP URL that answers 2xx.
    #[serde(default)]
    pub http: String,
    #[serde(default = "default_period")]
    pub period_seconds: u64,
}

fn default_period() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalityPolicy {
    Required,
    Preferred,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Locality {
    pub policy: LocalityPolicy,
    #[serde(default = "default_warm")]
    pub min_warm_fraction: f64,
}

fn default_warm() -> f64 {
    1.0
}

impl Default for Locality {
    fn default() -> Self {
        Self {
            policy: LocalityPolicy::Preferred,
            min_warm_fraction: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    /// ReplicaSet: replicas kept running; Job: replicas run at once.
    #[serde(default = "one")]
    pub replicas: i64,
    /// Job: attempts after a failure, per replica.
    #[serde(default)]
    pub retries: u32,
    /// A label used for container reuse matching on this platform.
    #[serde(default)]
    pub image: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "no_gpu")]
    pub gpu: Gpu,
    /// Millicores.
    #[serde(default)]
    pub cpu_millis: u64,
    /// Bytes, or with a unit ("16GiB").
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub datasets: Vec<DatasetMount>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub reuse_container: bool,
    #[serde(default)]
    pub locality: Locality,
}

fn one() -> i64 {
    1
}

fn no_gpu() -> Gpu {
    Gpu {
        model: String::new(),
        count: 0,
    }
}

/// A deployment as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Deployment {
    #[serde(default = "api_version")]
    pub api_version: String,
    pub kind: Kind,
    pub metadata: Metadata,
    pub spec: Spec,
}

fn api_version() -> String {
    "shoal.io/v1alpha1".into()
}

/// Parses one deployment from YAML (JSON is YAML too). An error is one
/// short line, however long the value it complains about.
pub fn parse(text: &str) -> Result<Deployment, String> {
    let d: Deployment = serde_yaml::from_str(text)
        .map_err(|e| format!("invalid deployment spec: {}", parser_error(&e)))?;
    validate(&d)?;
    Ok(d)
}

/// Checks what the types cannot: names, counts, paths, units.
pub fn validate(d: &Deployment) -> Result<(), String> {
    let name = &d.metadata.name;
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(format!(
            "invalid deployment name {}: use lowercase letters, digits and '-', at most 63",
            quote(name)
        ));
    }
    if d.api_version != "shoal.io/v1alpha1" {
        return Err(format!(
            "unsupported apiVersion {} (expected shoal.io/v1alpha1)",
            quote(&d.api_version)
        ));
    }
    let s = &d.spec;
    if s.replicas < 0 {
        return Err(format!(
            "spec.replicas must not be negative (got {})",
            s.replicas
        ));
    }
    if s.replicas > 10_000 {
        return Err(format!("spec.replicas {} is above 10000", s.replicas));
    }
    if s.command.is_empty() || s.command[0].is_empty() {
        return Err("spec.command must name a program".into());
    }
    if let Some(m) = &s.memory {
        shoal_proto::units::parse_size(m).map_err(|e| format!("spec.memory: {e}"))?;
    }
    let mut paths = Vec::new();
    for ds in &s.datasets {
        if !ds.mount_path.starts_with('/') || ds.mount_path.contains("..") {
            return Err(format!(
                "spec.datasets[{}].mountPath {} must be an absolute path without '..'",
                quote(&ds.name),
                quote(&ds.mount_path)
            ));
        }
        if paths.contains(&&ds.mount_path) {
            return Err(format!(
                "spec.datasets: two datasets mount at {}",
                quote(&ds.mount_path)
            ));
        }
        paths.push(&ds.mount_path);
    }
    if !(0.0..=1.0).contains(&s.locality.min_warm_fraction) {
        return Err(format!(
            "spec.locality.minWarmFraction must be within 0..1 (got {})",
            s.locality.min_warm_fraction
        ));
    }
    if let Some(h) = &s.health_check {
        if h.command.is_empty() == h.http.is_empty() {
            return Err("spec.healthCheck needs exactly one of command or http".into());
        }
    }
    Ok(())
}

impl Deployment {
    /// Bytes of memory asked for (0 when unset).
    pub fn memory_bytes(&self) -> u64 {
        self.spec
            .memory
            .as_deref()
            .and_then(|m| shoal_proto::units::parse_size(m).ok())
            .unwrap_or(0)
    }

    /// What makes two replicas' containers interchangeable: image, command,
    /// arguments and environment.
    pub fn reuse_key(&self) -> (String, String) {
        let params = serde_json::to_string(&(&self.spec.command, &self.spec.args, &self.spec.env))
            .expect("strings serialise");
        (
            self.spec.image.clone(),
            blake3::hash(params.as_bytes()).to_hex()[..16].to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
kind: ReplicaSet
metadata: {name: llm}
spec:
  replicas: 2
  image: vllm:1
  command: [python3, serve.py]
  gpu: {model: h100, count: 1}
  memory: 16GiB
  datasets: [{name: sample}]
  locality: {policy: required, minWarmFraction: 0.9}
"#;

    #[test]
    fn a_good_spec_parses_with_defaults() {
        let d = parse(GOOD).unwrap();
        assert_eq!(d.kind, Kind::ReplicaSet);
        assert_eq!(d.spec.datasets[0].mount_path, "/data");
        assert_eq!(d.memory_bytes(), 16 << 30);
        assert_eq!(d.spec.locality.policy, LocalityPolicy::Required);
        let mut other = d.clone();
        other.spec.replicas = 5;
        assert_eq!(
            d.reuse_key(),
            other.reuse_key(),
            "replicas do not change the container"
        );
        other.spec.env.insert("A".into(), "1".into());
        assert_ne!(d.reuse_key(), other.reuse_key());
    }

    #[test]
    fn bad_specs_are_refused_with_the_field_named() {
        for (text, needle) in [
            (
                GOOD.replace("replicas: 2", "replicas: -1"),
                "must not be negative",
            ),
            (
                GOOD.replace("image: vllm:1", "imagee: vllm:1"),
                "unknown field `imagee`",
            ),
            (
                GOOD.replace("kind: ReplicaSet", "kind: Pod"),
                "unknown variant `Pod`",
            ),
            (
                GOOD.replace("name: llm", "name: LLM_1"),
                "invalid deployment name",
            ),
            (GOOD.replace("memory: 16GiB", "memory: lots"), "spec.memory"),
            (
                GOOD.replace("minWarmFraction: 0.9", "minWarmFraction: 2"),
                "minWarmFraction",
            ),
            (
                GOOD.replace("{name: sample}", "{name: sample, mountPath: data}"),
                "absolute",
            ),
            ("kind: [".to_string(), "invalid deployment spec"),
            (
                GOOD.replace("command: [python3, serve.py]", "command: []"),
                "spec.command",
            ),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
