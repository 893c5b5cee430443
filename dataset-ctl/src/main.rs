//! `dataset-ctl`: the operator CLI for Shoal datasets, shaped like kubectl.

mod jobs;
mod locality;
mod spec;

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use futures::stream::{FuturesOrdered, StreamExt};
use serde_json::{json, Value};
use shoal_proto::units::{format_size, parse_size};
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};

use shoal_proto::client::{Client, Endpoint};

/// Manage Shoal datasets and inspect cache nodes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Cache node API: host:port or unix:///path/to/node.sock.
    #[arg(
        long,
        global = true,
        env = "SHOAL_ENDPOINT",
        default_value = "127.0.0.1:7070"
    )]
    endpoint: String,
    /// File holding the node's API token (needed over TCP when the node has one).
    #[arg(long, global = true, env = "SHOAL_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a dataset from a source and list it into manifest version 1.
    Create {
        name: String,
        /// s3://bucket/prefix or file:///path
        #[arg(long)]
        source: String,
        /// S3-compatible endpoint URL (MinIO, rclone, OSS...).
        #[arg(long)]
        s3_endpoint: Option<String>,
        #[arg(long)]
        region: Option<String>,
        /// Chunk size, e.g. 4MiB (64KiB..64MiB).
        #[arg(long, value_parser = parse_size)]
        chunk_size: Option<u64>,
        /// MemoryThenDisk, DiskOnly or MemoryOnly.
        #[arg(long)]
        tier_policy: Option<String>,
        /// Never evict this dataset's chunks.
        #[arg(long)]
        pin: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Create datasets from a YAML file ("-" reads standard input).
    Apply {
        #[arg(short, long)]
        filename: String,
    },
    /// List datasets with their cached bytes.
    #[command(alias = "ls-datasets")]
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one dataset.
    Get {
        name: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Delete a dataset and the cached bytes only it used.
    Delete { name: String },
    /// List the source again into a new manifest version (if it changed).
    Refresh {
        name: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Write a file of a dataset to standard output, through the cache.
    Cat {
        name: String,
        path: String,
        /// Manifest version (default: latest).
        #[arg(long, default_value_t = 0)]
        version: u64,
    },
    /// List a directory of a dataset.
    Ls {
        name: String,
        #[arg(default_value = "/")]
        path: String,
        #[arg(long, default_value_t = 0)]
        version: u64,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show cache nodes with their tiers and usage.
    Nodes {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Make a dataset's bytes resident on cache nodes before a job reads them.
    ///
    /// Without --nodes, --all-nodes, --selector or --replicas, the node that
    /// receives the request (--endpoint) prewarms itself.
    Prewarm {
        name: String,
        /// Path prefix inside the dataset (repeatable; default: every file).
        #[arg(long = "path", value_name = "PREFIX")]
        paths: Vec<String>,
        #[command(flatten)]
        targets: jobs::PrewarmTargets,
        /// Manifest version (default: latest).
        #[arg(long, default_value_t = 0)]
        version: u64,
        /// Tier to fill (default: wherever the dataset's tier policy puts chunks).
        #[arg(long, value_enum)]
        tier: Option<jobs::Tier>,
        /// Keep the prewarmed bytes from eviction until `dataset-ctl unpin`.
        #[arg(long)]
        pin: bool,
        /// Follow the job's progress until it ends; exit non-zero unless it completes.
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Drop a dataset's cached bytes (and their prewarm pins) from cache nodes.
    ///
    /// Without --nodes, every node evicts.
    Evict {
        name: String,
        /// Path prefix inside the dataset (repeatable; default: every file).
        #[arg(long = "path", value_name = "PREFIX")]
        paths: Vec<String>,
        #[command(flatten)]
        targets: jobs::NodeTargets,
        /// Follow the job's progress until it ends; exit non-zero unless it completes.
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Remove a dataset's prewarm pins from cache nodes (the bytes stay cached).
    ///
    /// Without --nodes, every node unpins.
    Unpin {
        name: String,
        #[command(flatten)]
        targets: jobs::NodeTargets,
        /// Follow the job's progress until it ends; exit non-zero unless it completes.
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// List prewarm, evict and unpin jobs with their progress.
    Jobs {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one job and each target node's part of it.
    Job {
        id: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Cancel a job; its targets stop their parts.
    Cancel { id: String },
    /// Show where a dataset version's bytes are resident, per node.
    Locality {
        name: String,
        /// Manifest version (default: latest).
        #[arg(long, default_value_t = 0)]
        version: u64,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

fn main() -> std::process::ExitCode {
    shoal_proto::cli::run(run(Cli::parse()))
}

/// The API token for every connection of this run.
static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

async fn connect(endpoint: &Endpoint) -> Result<Client> {
    let token = TOKEN.get().and_then(|t| t.as_deref());
    Ok(Client::connect(endpoint).await?.with_token(token))
}

async fn run(cli: Cli) -> Result<()> {
    let endpoint = Endpoint::parse(&cli.endpoint)?;
    let token = match &cli.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read token file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let _ = TOKEN.set(token);
    match cli.command {
        Command::Create {
            name,
            source,
            s3_endpoint,
            region,
            chunk_size,
            tier_policy,
            pin,
            output,
        } => {
            let policy = tier_policy
                .as_deref()
                .map(spec::parse_policy)
                .transpose()?
                .unwrap_or(v1::TierPolicy::MemoryThenDisk);
            let spec = v1::DatasetSpec {
                name,
                source,
                s3_endpoint: s3_endpoint.unwrap_or_default(),
                region: region.unwrap_or_default(),
                chunk_size: chunk_size.unwrap_or(0),
                tier_policy: policy as i32,
                pin,
            };
            let status = create(&endpoint, spec).await?;
            match output {
                Output::Json => print_json(&dataset_json(&status)),
                Output::Table => println!("dataset.shoal/{} created", spec_name(&status)),
            }
        }
        Command::Apply { filename } => {
            let text = if filename == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&filename)
                    .with_context(|| format!("cannot read {filename}"))?
            };
            let specs = spec::parse(&text, &filename)?;
            let mut client = connect(&endpoint).await?;
            for s in specs {
                let existing = client
                    .call(Req::Get(v1::DatasetRef {
                        name: s.name.clone(),
                    }))
                    .await;
                match existing {
                    Ok(Resp::Dataset(d)) => {
                        let have = d.spec.unwrap_or_default();
                        let same = have.source == s.source.trim_end_matches('/')
                            && have.s3_endpoint == s.s3_endpoint
                            && have.region == s.region
                            && (s.chunk_size == 0 || have.chunk_size == s.chunk_size)
                            && have.tier_policy == s.tier_policy
                            && have.pin == s.pin;
                        if !same {
                            bail!(
                                "dataset {:?} exists with a different spec; its spec is immutable: delete it and apply again",
                                s.name
                            );
                        }
                        println!("dataset.shoal/{} unchanged", s.name);
                    }
                    _ => {
                        let name = s.name.clone();
                        create(&endpoint, s).await?;
                        println!("dataset.shoal/{name} created");
                    }
                }
            }
        }
        Command::List { output } => {
            let mut client = connect(&endpoint).await?;
            let Resp::Datasets(list) = client.call(Req::List(v1::ListDatasets {})).await? else {
                bail!("unexpected response");
            };
            match output {
                Output::Json => {
                    print_json(&Value::Array(list.items.iter().map(dataset_json).collect()))
                }
                Output::Table => print_table(
                    &[
                        "NAME",
                        "SOURCE",
                        "FILES",
                        "TOTAL SIZE",
                        "CACHED",
                        "CACHE CAPACITY",
                        "CACHED %",
                        "PHASE",
                    ],
                    list.items.iter().map(|d| {
                        vec![
                            spec_name(d),
                            d.spec
                                .as_ref()
                                .map(|s| s.source.clone())
                                .unwrap_or_default(),
                            d.files.to_string(),
                            format_size(d.total_bytes),
                            format_size(d.cached_bytes),
                            format_size(d.cache_capacity),
                            format!("{:.1}%", percent(d)),
                            d.phase.clone(),
                        ]
                    }),
                ),
            }
        }
        Command::Get { name, output } => {
            let d = dataset(&endpoint, Req::Get(v1::DatasetRef { name })).await?;
            print_dataset(&d, output);
        }
        Command::Refresh { name, output } => {
            let d = dataset(&endpoint, Req::Refresh(v1::DatasetRef { name })).await?;
            print_dataset(&d, output);
        }
        Command::Delete { name } => {
            let mut client = connect(&endpoint).await?;
            client
                .call(Req::Delete(v1::DatasetRef { name: name.clone() }))
                .await?;
            println!("dataset.shoal/{name} deleted");
        }
        Command::Cat {
            name,
            path,
            version,
        } => cat(&endpoint, name, path, version).await?,
        Command::Ls {
            name,
            path,
            version,
            output,
        } => {
            let mut client = connect(&endpoint).await?;
            let Resp::Dir(dir) = client
                .call(Req::ListDir(v1::PathRef {
                    dataset: name,
                    version,
                    path,
                }))
                .await?
            else {
                bail!("unexpected response");
            };
            match output {
                Output::Json => print_json(&Value::Array(
                    dir.entries
                        .iter()
                        .map(|e| json!({"path": e.path, "kind": kind_name(e), "size": e.size, "mode": e.mode, "mtime_nanos": e.mtime_nanos}))
                        .collect(),
                )),
                Output::Table => print_table(
                    &["NAME", "KIND", "SIZE"],
                    dir.entries.iter().map(|e| {
                        let base = e.path.rsplit('/').next().unwrap_or(&e.path).to_string();
                        vec![base, kind_name(e).to_string(), e.size.to_string()]
                    }),
                ),
            }
        }
        Command::Nodes { output } => {
            let mut client = connect(&endpoint).await?;
            let Resp::Nodes(nodes) = client.call(Req::Nodes(v1::ListNodes {})).await? else {
                bail!("unexpected response");
            };
            match output {
                Output::Json => print_json(&Value::Array(
                    nodes
                        .items
                        .iter()
                        .map(|n| {
                            json!({
                                "name": n.name, "address": n.address, "state": n.state, "labels": n.labels,
                                "tiers": n.tiers.iter().map(|t| json!({"name": t.name, "dir": t.dir, "used_bytes": t.used_bytes, "quota_bytes": t.quota_bytes})).collect::<Vec<_>>(),
                            })
                        })
                        .collect(),
                )),
                Output::Table => print_table(
                    &["NAME", "ADDRESS", "STATE", "MEMORY", "DISK", "LABELS"],
                    nodes.items.iter().map(|n| {
                        let tier = |name: &str| {
                            n.tiers
                                .iter()
                                .find(|t| t.name == name)
                                .map(|t| format!("{}/{}", format_size(t.used_bytes), format_size(t.quota_bytes)))
                                .unwrap_or_else(|| "-".into())
                        };
                        vec![
                            n.name.clone(),
                            n.address.clone(),
                            n.state.clone(),
                            tier("memory"),
                            tier("disk"),
                            format_labels(&n.labels),
                        ]
                    }),
                ),
            }
        }
        Command::Prewarm {
            name,
            paths,
            targets,
            version,
            tier,
            pin,
            wait,
            output,
        } => {
            let (targets, all_nodes) = targets.resolve()?;
            let spec = v1::JobSpec {
                kind: v1::JobKind::Prewarm as i32,
                dataset: name,
                version,
                paths,
                tier: tier.map_or(v1::TierTarget::AnyTier, v1::TierTarget::from) as i32,
                pin,
                ..targets
            };
            jobs::submit(&endpoint, spec, all_nodes, wait, output).await?;
        }
        Command::Evict {
            name,
            paths,
            targets,
            wait,
            output,
        } => {
            let (targets, all_nodes) = targets.resolve()?;
            let spec = v1::JobSpec {
                kind: v1::JobKind::Evict as i32,
                dataset: name,
                paths,
                ..targets
            };
            jobs::submit(&endpoint, spec, all_nodes, wait, output).await?;
        }
        Command::Unpin {
            name,
            targets,
            wait,
            output,
        } => {
            let (targets, all_nodes) = targets.resolve()?;
            let spec = v1::JobSpec {
                kind: v1::JobKind::Unpin as i32,
                dataset: name,
                ..targets
            };
            jobs::submit(&endpoint, spec, all_nodes, wait, output).await?;
        }
        Command::Jobs { output } => jobs::list(&endpoint, output).await?,
        Command::Job { id, output } => {
            let job = jobs::call(&endpoint, Req::Job(v1::JobRef { id })).await?;
            jobs::print_job(&job, output);
        }
        Command::Cancel { id } => {
            let job = jobs::call(&endpoint, Req::CancelJob(v1::JobRef { id })).await?;
            println!("job.shoal/{} cancelled", jobs::job_id(&job));
        }
        Command::Locality {
            name,
            version,
            output,
        } => locality::show(&endpoint, name, version, output).await?,
    }
    Ok(())
}

async fn create(endpoint: &Endpoint, spec: v1::DatasetSpec) -> Result<v1::DatasetStatus> {
    dataset(
        endpoint,
        Req::Create(v1::CreateDataset { spec: Some(spec) }),
    )
    .await
}

async fn dataset(endpoint: &Endpoint, req: Req) -> Result<v1::DatasetStatus> {
    let mut client = connect(endpoint).await?;
    match client.call(req).await? {
        Resp::Dataset(d) => Ok(d),
        _ => bail!("unexpected response"),
    }
}

/// Bytes per read request, and requests kept in flight: the node fetches
/// a request's chunks in parallel, and several requests overlap so the
/// origin pipe stays full while standard output drains. The first request
/// is small and each next one doubles, so the first bytes are written as
/// soon as the first piece arrives instead of after a whole window.
const CAT_FIRST_WINDOW: u64 = 256 << 10;
const CAT_WINDOW: u64 = 16 << 20;
const CAT_DEPTH: usize = 4;

async fn cat(endpoint: &Endpoint, name: String, path: String, version: u64) -> Result<()> {
    let mut client = connect(endpoint).await?;
    let Resp::Entry(entry) = client
        .call(Req::Stat(v1::PathRef {
            dataset: name.clone(),
            version,
            path: path.clone(),
        }))
        .await?
    else {
        bail!("unexpected response");
    };
    if entry.kind() == v1::FileKind::Directory {
        bail!("{path}: is a directory");
    }
    // Pin the version the stat saw, so every window reads the same manifest.
    let pinned = if version == 0 {
        let Resp::Dataset(d) = client
            .call(Req::Get(v1::DatasetRef { name: name.clone() }))
            .await?
        else {
            bail!("unexpected response");
        };
        d.version
    } else {
        version
    };
    let size = if entry.kind() == v1::FileKind::Symlink {
        u64::MAX
    } else {
        entry.size
    };
    let mut pool: Vec<Client> = vec![client];
    let mut inflight = FuturesOrdered::new();
    let mut offset = 0u64;
    let mut window = CAT_FIRST_WINDOW;
    let mut out = std::io::stdout().lock();
    loop {
        while inflight.len() < CAT_DEPTH && offset < size {
            let c = match pool.pop() {
                Some(c) => c,
                None => connect(endpoint).await?,
            };
            let file = v1::PathRef {
                dataset: name.clone(),
                version: pinned,
                path: path.clone(),
            };
            let (start, length) = (offset, window);
            inflight.push_back(async move {
                let mut c = c;
                let r = c
                    .call(Req::Read(v1::ReadRange {
                        file: Some(file),
                        offset: start,
                        length,
                        direct: false,
                    }))
                    .await;
                (c, r, length)
            });
            offset += window;
            window = (window * 2).min(CAT_WINDOW);
        }
        let Some((c, r, asked)) = inflight.next().await else {
            break;
        };
        pool.push(c);
        let Resp::Data(data) = r? else {
            bail!("unexpected response")
        };
        if data.data.is_empty() {
            break;
        }
        let last = (data.data.len() as u64) < asked;
        if let Err(e) = out.write_all(&data.data) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e).context("writing standard output");
        }
        if last {
            break;
        }
    }
    out.flush().or_else(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(())
}

fn spec_name(d: &v1::DatasetStatus) -> String {
    d.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default()
}

fn percent(d: &v1::DatasetStatus) -> f64 {
    percent_of(d.cached_bytes, d.total_bytes)
}

/// `part` as a percentage of `total`; an empty whole counts as complete.
fn percent_of(part: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

/// A transfer rate, e.g. "96.3 MiB/s".
fn format_rate(bps: u64) -> String {
    format!("{}/s", format_size(bps))
}

/// A duration in kubectl's style: "8s", "3m20s", "2h5m", "4d3h".
fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Milliseconds since the Unix epoch on this machine's clock.
fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How long ago a wall clock time (ms) was, e.g. "3s ago"; "-" when unset.
/// A time ahead of this machine's clock (skew) counts as now.
fn ago_ms(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let secs = (now_unix_ms() - unix_ms).max(0) as u64 / 1000;
    format!("{} ago", format_duration(secs))
}

/// Labels as sorted `k=v` pairs joined by commas, or "<none>".
fn format_labels(labels: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

fn kind_name(e: &v1::FileEntry) -> &'static str {
    match e.kind() {
        v1::FileKind::File => "file",
        v1::FileKind::Directory => "dir",
        v1::FileKind::Symlink => "symlink",
    }
}

fn dataset_json(d: &v1::DatasetStatus) -> Value {
    let spec = d.spec.clone().unwrap_or_default();
    json!({
        "name": spec.name,
        "source": spec.source,
        "s3_endpoint": spec.s3_endpoint,
        "region": spec.region,
        "chunk_size": spec.chunk_size,
        "tier_policy": spec.tier_policy().as_str_name(),
        "pin": spec.pin,
        "version": d.version,
        "versions": d.versions,
        "files": d.files,
        "directories": d.directories,
        "total_bytes": d.total_bytes,
        "cached_bytes": d.cached_bytes,
        "cached_percent": (percent(d) * 10.0).round() / 10.0,
        "cache_capacity": d.cache_capacity,
        "phase": d.phase,
        "created_unix": d.created_unix,
        "refreshed_unix": d.refreshed_unix,
        "skipped_keys": d.skipped_keys,
        "skipped_examples": d.skipped_examples.iter()
            .map(|k| json!({"key": k.key, "reason": k.reason}))
            .collect::<Vec<_>>(),
    })
}

fn print_dataset(d: &v1::DatasetStatus, output: Output) {
    match output {
        Output::Json => print_json(&dataset_json(d)),
        Output::Table => {
            let spec = d.spec.clone().unwrap_or_default();
            let rows = [
                ("Name", spec.name.clone()),
                ("Source", spec.source.clone()),
                (
                    "S3 endpoint",
                    if spec.s3_endpoint.is_empty() {
                        "-".into()
                    } else {
                        spec.s3_endpoint.clone()
                    },
                ),
                ("Chunk size", format_size(spec.chunk_size)),
                ("Tier policy", spec.tier_policy().as_str_name().to_string()),
                ("Pinned", spec.pin.to_string()),
                ("Version", format!("{} (of {:?})", d.version, d.versions)),
                ("Files", d.files.to_string()),
                ("Directories", d.directories.to_string()),
                ("Total size", format_size(d.total_bytes)),
                (
                    "Cached",
                    format!("{} ({:.1}%)", format_size(d.cached_bytes), percent(d)),
                ),
                ("Phase", d.phase.clone()),
            ];
            for (k, v) in rows {
                println!("{:<13} {v}", format!("{k}:"));
            }
            if d.skipped_keys > 0 {
                println!(
                    "{:<13} {} origin keys no path can show (docs/SEMANTICS.md), e.g.",
                    "Skipped:", d.skipped_keys
                );
                for k in &d.skipped_examples {
                    // Debug quoting shows control characters as escapes.
                    println!("{:<13}   {:?}: {}", "", k.key, k.reason);
                }
            }
        }
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

fn print_table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(200), "3m20s");
        assert_eq!(format_duration(3 * 3600 + 5 * 60 + 9), "3h5m");
        assert_eq!(format_duration(4 * 86_400 + 3 * 3600), "4d3h");
        assert_eq!(ago_ms(0), "-");
        assert_eq!(ago_ms(now_unix_ms() + 60_000), "0s ago");
    }

    #[test]
    fn labels_are_sorted_pairs() {
        let labels = [("zone", "a"), ("gpu", "h100")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert_eq!(format_labels(&labels), "gpu=h100,zone=a");
        assert_eq!(format_labels(&Default::default()), "<none>");
    }
}
