//! The node's configuration file (TOML) and its defaults.
//!
//! `Config::default()` is a working single-machine node: index under
//! `/var/lib/shoal`, a 2 GiB memory tier in `/dev/shm/shoal`, a 20 GiB disk
//! tier under the data directory, the control API on 127.0.0.1:7070 and the
//! admin endpoint on 127.0.0.1:9464. Every field may be omitted.
//!
//! ```toml
//! data_dir = "/var/lib/shoal"
//! listen = "0.0.0.0:7070"
//! admin = "0.0.0.0:9464"
//! [memory]
//! dir = "/dev/shm/shoal"
//! quota = "8GiB"
//! high_watermark = 0.95
//! low_watermark = 0.70
//! [disk]
//! quota = "200GiB"
//! [labels]
//! zone = "us-east-1a"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::durability::VerifyMode;
use crate::mesh::MeshConfig;
use crate::node::NodeConfig;
use crate::store::{StoreConfig, TierConfig};

/// A size written as bytes or with a unit ("4GiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => shoal_proto::units::parse_size(&s)
                .map(Size)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// One tier's section.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TierSection {
    /// Directory of the backing files.
    pub dir: Option<PathBuf>,
    /// Byte quota; 0 disables the tier.
    pub quota: Option<Size>,
    /// Fraction of the quota at which eviction starts (default 0.95).
    pub high_watermark: Option<f64>,
    /// Fraction of the quota eviction frees down to (default 0.70).
    pub low_watermark: Option<f64>,
}

/// The `[mesh]` section; absent means a standalone node.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    /// UDP address of the QUIC endpoint, e.g. "0.0.0.0:7071".
    pub listen: Option<String>,
    /// Address peers use to reach this node (default: `listen`).
    pub advertise: Option<String>,
    /// Seed peers ("host:port").
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Directory with ca.pem, node.pem, node.key (from `cache-node ca issue`).
    pub tls_dir: Option<PathBuf>,
    /// A member silent this long (ms) is declared dead (default 3000).
    pub dead_after_ms: Option<u64>,
    /// A member dead this long (s) is forgotten: no longer listed by
    /// `dataset-ctl nodes` nor offered to the scheduler (default 3600).
    pub forget_after_secs: Option<u64>,
    /// Chunk requests served to peers at once (default 8); past it, an
    /// owner redirects askers to other holders.
    pub serve_concurrency: Option<usize>,
}

/// The configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the index and (by default) the disk tier.
    pub data_dir: Option<PathBuf>,
    /// Control API TCP address.
    pub listen: Option<String>,
    /// Admin HTTP address.
    pub admin: Option<String>,
    /// Read API Unix socket (default `<data_dir>/node.sock`).
    pub socket: Option<PathBuf>,
    /// Node name (default: the host name).
    pub name: Option<String>,
    #[serde(default)]
    pub memory: TierSection,
    #[serde(default)]
    pub disk: TierSection,
    /// Concurrent origin requests (default 16).
    pub origin_concurrency: Option<usize>,
    /// Manifest versions kept per dataset, used or not (default 2); older
    /// ones go once no mount or job used them for `version_grace_secs`
    /// (default 600).
    pub keep_versions: Option<usize>,
    pub version_grace_secs: Option<u64>,
    /// When chunks recovered at start are hashed again: "auto" (after an
    /// unclean stop across a reboot; default), "always", "never".
    pub verify_on_start: Option<VerifyMode>,
    /// Labels shown by `dataset-ctl nodes`.
    #[serde(default)]
    pub labels: HashMap<String, String>,
    #[serde(default)]
    pub mesh: MeshSection,
}

/// Everything the binary needs to start.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub node: NodeConfig,
    pub listen: String,
    pub admin: String,
    pub socket: PathBuf,
    pub mesh: Option<MeshConfig>,
}

pub const DEFAULT_DATA_DIR: &str = "/var/lib/shoal";
pub const DEFAULT_MEMORY_DIR: &str = "/dev/shm/shoal";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9464";
const DEFAULT_MEMORY_QUOTA: u64 = 2 << 30;
const DEFAULT_DISK_QUOTA: u64 = 20 << 30;

impl Config {
    /// Reads a TOML file; unknown keys are errors (a typo must not be ignored).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
    }

    /// Applies defaults and checks values.
    pub fn resolve(self) -> Result<Resolved, String> {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let tier = |s: &TierSection,
                    dir: PathBuf,
                    quota: u64,
                    what: &str|
         -> Result<Option<TierConfig>, String> {
            let quota = s.quota.map_or(quota, |q| q.0);
            let high = s.high_watermark.unwrap_or(0.95);
            let low = s.low_watermark.unwrap_or(0.70);
            if !(0.0 < low && low <= high && high <= 1.0) {
                return Err(format!(
                    "{what} watermarks must satisfy 0 < low ({low}) <= high ({high}) <= 1"
                ));
            }
            Ok((quota > 0).then(|| TierConfig {
                dir: s.dir.clone().unwrap_or(dir),
                quota,
                high,
                low,
            }))
        };
        let memory = tier(
            &self.memory,
            PathBuf::from(DEFAULT_MEMORY_DIR),
            DEFAULT_MEMORY_QUOTA,
            "memory",
        )?;
        let disk = tier(
            &self.disk,
            data_dir.join("chunks"),
            DEFAULT_DISK_QUOTA,
            "disk",
        )?;
        if memory.is_none() && disk.is_none() {
            return Err("both tiers have a zero quota: nothing could be cached".into());
        }
        if let (Some(m), Some(d)) = (&memory, &disk) {
            if m.dir == d.dir {
                return Err(format!(
                    "memory and disk tiers share the directory {}",
                    m.dir.display()
                ));
            }
        }
        let listen = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let name = self.name.unwrap_or_else(hostname);
        let dead_after = std::time::Duration::from_millis(self.mesh.dead_after_ms.unwrap_or(3000));
        if dead_after < std::time::Duration::from_millis(300) {
            return Err(format!(
                "mesh dead_after_ms {} is too short: at least 300 ms",
                dead_after.as_millis()
            ));
        }
        let mesh = match (self.mesh.listen, self.mesh.tls_dir) {
            (None, None) if self.mesh.seeds.is_empty() => None,
            (Some(l), Some(tls_dir)) => Some(MeshConfig {
                listen: l
                    .parse()
                    .map_err(|e| format!("mesh listen address {l:?}: {e}"))?,
                advertise: self.mesh.advertise.unwrap_or(l),
                seeds: self.mesh.seeds,
                tls_dir,
                // At least three heartbeat rounds fit in the detector's delay.
                interval: (dead_after / 3).min(std::time::Duration::from_millis(500)),
                dead_after,
                forget_after: std::time::Duration::from_secs(
                    self.mesh.forget_after_secs.unwrap_or(3600),
                )
                .max(dead_after),
                serve_concurrency: self.mesh.serve_concurrency.unwrap_or(8).max(1),
            }),
            _ => {
                return Err(
                    "the mesh needs both a listen address (--peer-listen) and a TLS directory (--tls-dir)".into(),
                )
            }
        };
        Ok(Resolved {
            socket: self.socket.unwrap_or_else(|| data_dir.join("node.sock")),
            admin: self.admin.unwrap_or_else(|| DEFAULT_ADMIN.to_string()),
            mesh,
            node: NodeConfig {
                data_dir,
                name,
                advertise: listen.clone(),
                store: StoreConfig {
                    memory,
                    disk,
                    origin_concurrency: self.origin_concurrency.unwrap_or(16),
                    read_concurrency: 8,
                    verify_recovered: false,
                },
                labels: self.labels,
                verify_on_start: self.verify_on_start.unwrap_or_default(),
                keep_versions: self.keep_versions.unwrap_or(2).max(1),
                version_grace: std::time::Duration::from_secs(
                    self.version_grace_secs.unwrap_or(600),
                ),
            },
            listen,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_working_node() {
        let r = Config::default().resolve().unwrap();
        let s = &r.node.store;
        assert_eq!(s.memory.as_ref().unwrap().quota, 2 << 30);
        assert_eq!(
            s.disk.as_ref().unwrap().dir,
            PathBuf::from("/var/lib/shoal/chunks")
        );
        assert_eq!(r.socket, PathBuf::from("/var/lib/shoal/node.sock"));
    }

    #[test]
    fn parses_units_and_rejects_typos_and_bad_watermarks() {
        let c: Config = toml::from_str("[memory]\nquota = \"1GiB\"\n[disk]\nquota = 0\n").unwrap();
        let r = c.resolve().unwrap();
        assert_eq!(r.node.store.memory.unwrap().quota, 1 << 30);
        assert!(r.node.store.disk.is_none());
        assert!(toml::from_str::<Config>("dataa_dir = \"/x\"").is_err());
        let c: Config =
            toml::from_str("[memory]\nhigh_watermark = 0.5\nlow_watermark = 0.9\n").unwrap();
        assert!(c.resolve().is_err());
    }

    #[test]
    fn mesh_timers_parse_and_forgetting_never_precedes_death() {
        let mesh = |extra: &str| {
            let c: Config = toml::from_str(&format!(
                "[mesh]\nlisten = \"127.0.0.1:7071\"\ntls_dir = \"/t\"\n{extra}"
            ))
            .unwrap();
            c.resolve().unwrap().mesh.unwrap()
        };
        let m = mesh("dead_after_ms = 2000\nforget_after_secs = 120\n");
        assert_eq!(m.dead_after, std::time::Duration::from_secs(2));
        assert_eq!(m.forget_after, std::time::Duration::from_secs(120));
        assert_eq!(mesh("").forget_after, std::time::Duration::from_secs(3600));
        // Forgotten before dead makes no sense: forgetting waits for death.
        let m = mesh("dead_after_ms = 5000\nforget_after_secs = 1\n");
        assert_eq!(m.forget_after, std::time::Duration::from_secs(5));
    }
}
