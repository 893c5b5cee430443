//! Cluster jobs (prewarm, evict, unpin): creating them, following them and
//! showing them.
//!
//! A job runs on many nodes and outlives the request that created it, and
//! any node can answer for the whole job. So the CLI only submits it and then
//! reads the job object back; `--wait` polls it until it ends, which turns a
//! cluster-wide operation into a blocking command whose exit status scripts
//! can rely on.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;
use shoal_proto::client::Endpoint;
use shoal_proto::units::format_size;
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};

use crate::{
    ago_ms, connect, format_duration, format_labels, format_rate, now_unix_ms, percent_of,
    print_json, print_table, Output,
};

/// How often `--wait` asks for the job's status.
const POLL: Duration = Duration::from_millis(500);
/// Plain progress lines (standard error not a terminal) come at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(1);
/// Target nodes named in the one-line summary before the rest are counted.
const SUMMARY_NODES: usize = 5;

/// Which nodes a prewarm targets: at most one of these flags.
#[derive(Args, Debug)]
#[group(multiple = false)]
pub struct PrewarmTargets {
    /// Target these nodes (comma-separated IDs).
    #[arg(long, value_name = "ID,ID")]
    nodes: Option<String>,
    /// Target every live node.
    #[arg(long)]
    all_nodes: bool,
    /// Target the nodes with this label (repeat to require several labels).
    #[arg(long, value_name = "KEY=VALUE")]
    selector: Vec<String>,
    /// Target this many nodes chosen by the cluster; a target that dies is replaced.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    replicas: Option<u32>,
}

impl PrewarmTargets {
    /// The targeting fields of the job spec, and whether to target every node.
    pub fn resolve(self) -> Result<(v1::JobSpec, bool)> {
        let spec = v1::JobSpec {
            nodes: nodes_of(self.nodes.as_deref())?,
            selector: parse_selector(&self.selector)?,
            replicas: self.replicas.unwrap_or(0),
            ..Default::default()
        };
        Ok((spec, self.all_nodes))
    }
}

/// The `--nodes` list, if given.
fn nodes_of(arg: Option<&str>) -> Result<Vec<String>> {
    Ok(arg.map(parse_nodes).transpose()?.unwrap_or_default())
}

/// Which nodes an evict or unpin targets: every node unless `--nodes`.
#[derive(Args, Debug)]
#[group(multiple = false)]
pub struct NodeTargets {
    /// Target only these nodes (comma-separated IDs).
    #[arg(long, value_name = "ID,ID")]
    nodes: Option<String>,
    /// Target every live node (the default).
    #[arg(long)]
    all_nodes: bool,
}

impl NodeTargets {
    /// The targeting fields of the job spec, and whether to target every
    /// node (`--all-nodes` only spells out the default).
    pub fn resolve(self) -> Result<(v1::JobSpec, bool)> {
        let all_nodes = self.all_nodes || self.nodes.is_none();
        let spec = v1::JobSpec {
            nodes: nodes_of(self.nodes.as_deref())?,
            ..Default::default()
        };
        Ok((spec, all_nodes))
    }
}

/// The tier a prewarm fills.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Tier {
    Memory,
    Disk,
}

impl From<Tier> for v1::TierTarget {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Memory => v1::TierTarget::Memory,
            Tier::Disk => v1::TierTarget::Disk,
        }
    }
}

/// Splits a comma-separated node list; blanks are dropped and a repeated
/// node is kept once.
fn parse_nodes(list: &str) -> Result<Vec<String>> {
    let mut nodes: Vec<String> = Vec::new();
    for node in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !nodes.iter().any(|n| n == node) {
            nodes.push(node.to_string());
        }
    }
    if nodes.is_empty() {
        bail!("--nodes {list:?} names no node");
    }
    Ok(nodes)
}

/// Parses `--selector KEY=VALUE` flags into the labels a target must have.
fn parse_selector(pairs: &[String]) -> Result<HashMap<String, String>> {
    let mut selector = HashMap::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty() && !v.contains('='))
            .with_context(|| format!("invalid --selector {pair:?}: expected KEY=VALUE"))?;
        if let Some(prev) = selector.insert(key.to_string(), value.to_string()) {
            if prev != value {
                bail!("--selector {key} given twice ({prev:?} and {value:?})");
            }
        }
    }
    Ok(selector)
}

/// Sends a request that a node answers with one job.
pub async fn call(endpoint: &Endpoint, req: Req) -> Result<v1::JobStatus> {
    let mut client = connect(endpoint).await?;
    match client.call(req).await? {
        Resp::Job(job) => Ok(job),
        _ => bail!("unexpected response"),
    }
}

/// Creates a job and reports it. With `wait`, follows it to its end, prints
/// its final status and fails unless it completed.
pub async fn submit(
    endpoint: &Endpoint,
    spec: v1::JobSpec,
    all_nodes: bool,
    wait: bool,
    output: Output,
) -> Result<()> {
    let job = call(
        endpoint,
        Req::CreateJob(v1::CreateJob {
            spec: Some(spec),
            all_nodes,
        }),
    )
    .await?;
    match (output, wait) {
        (Output::Table, _) => {
            println!("job.shoal/{} created", job_id(&job));
            println!("{}", targets_summary(&job));
        }
        (Output::Json, false) => print_json(&shoal_proto::json::job(&job)),
        // Standard output holds only the final status.
        (Output::Json, true) => {}
    }
    if !wait {
        return Ok(());
    }
    let id = job_id(&job).to_string();
    let job = follow(endpoint, job)
        .await
        .with_context(|| format!("following job {id} (it goes on: dataset-ctl job {id})"))?;
    print_job(&job, output);
    match outcome(&job) {
        Some(Err(e)) => bail!(e),
        _ => Ok(()),
    }
}

/// Polls a job until it ends, showing its progress on standard error.
async fn follow(endpoint: &Endpoint, mut job: v1::JobStatus) -> Result<v1::JobStatus> {
    let mut client = connect(endpoint).await?;
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    loop {
        let ended = outcome(&job).is_some();
        progress.show(&job, ended);
        if ended {
            return Ok(job);
        }
        tokio::time::sleep(POLL).await;
        let Resp::Job(next) = client
            .call(Req::Job(v1::JobRef {
                id: job_id(&job).to_string(),
            }))
            .await?
        else {
            bail!("unexpected response");
        };
        job = next;
    }
}

/// Whether a job has ended: `None` while it may still progress, `Some(Ok)`
/// when it completed, `Some(Err(line))` with the reason when it failed or
/// was cancelled.
fn outcome(job: &v1::JobStatus) -> Option<Result<(), String>> {
    let id = job_id(job);
    match job.state.as_str() {
        "Complete" => Some(Ok(())),
        "Cancelled" => Some(Err(format!("job {id} was cancelled"))),
        "Failed" => {
            let failed = job.parts.iter().filter(|p| p.state == "Failed").map(|p| {
                let mut why = p.node.clone();
                if p.failed_chunks > 0 {
                    let unit = if p.failed_chunks == 1 {
                        "chunk"
                    } else {
                        "chunks"
                    };
                    why.push_str(&format!(": {} {unit} failed", p.failed_chunks));
                }
                if !p.message.is_empty() {
                    why.push_str(&format!(": {}", p.message));
                }
                why
            });
            let lost = job
                .lost
                .iter()
                .filter(|n| {
                    !job.parts
                        .iter()
                        .any(|p| &p.node == *n && p.state == "Failed")
                })
                .map(|n| format!("{n}: lost"));
            let reasons: Vec<String> = failed.chain(lost).collect();
            Some(Err(if reasons.is_empty() {
                format!("job {id} Failed")
            } else {
                format!("job {id} Failed: {}", reasons.join("; "))
            }))
        }
        _ => None,
    }
}

/// How `--wait` shows progress on standard error.
enum Progress {
    /// Live bars, when standard error is a terminal.
    Bars {
        multi: MultiProgress,
        overall: ProgressBar,
        nodes: HashMap<String, ProgressBar>,
    },
    /// Plain lines for logs: one per node state change, and the overall
    /// progress when it changed, at most once per [`PLAIN_EVERY`].
    Lines {
        printed: Option<(Instant, (String, u64, u64))>,
        node_states: HashMap<String, String>,
    },
}

const OVERALL_TEMPLATE: &str =
    "{prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} ({percent}%) {msg}";
const NODE_TEMPLATE: &str = "  {prefix} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {msg}";

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("progress bar template")
        .progress_chars("=> ")
}

impl Progress {
    fn new(terminal: bool) -> Self {
        if terminal {
            let multi = MultiProgress::new();
            let overall = multi.add(ProgressBar::new(0).with_style(bar_style(OVERALL_TEMPLATE)));
            Progress::Bars {
                multi,
                overall,
                nodes: HashMap::new(),
            }
        } else {
            Progress::Lines {
                printed: None,
                node_states: HashMap::new(),
            }
        }
    }

    /// Shows the job's latest status; `last` when it has ended.
    fn show(&mut self, job: &v1::JobStatus, last: bool) {
        match self {
            Progress::Bars {
                multi,
                overall,
                nodes,
            } => {
                overall.set_prefix(format!("job {}", job_id(job)));
                overall.set_length(job.total_bytes);
                overall.set_position(job.done_bytes);
                overall.set_message(format!("{} {}", job.state, rate_eta(job)));
                let targets = targets(job);
                let width = targets.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
                for (node, part) in targets {
                    let bar = nodes.entry(node.to_string()).or_insert_with(|| {
                        multi.add(ProgressBar::new(0).with_style(bar_style(NODE_TEMPLATE)))
                    });
                    bar.set_prefix(format!("{node:<width$}"));
                    bar.set_length(part.map_or(0, |p| p.total_bytes));
                    bar.set_position(part.map_or(0, |p| p.done_bytes));
                    bar.set_message(with_message(node_state(job, node, part), part));
                }
                if last {
                    // Abandon, not finish: finishing would draw a failed bar as full.
                    overall.abandon();
                    nodes.values().for_each(ProgressBar::abandon);
                }
            }
            Progress::Lines {
                printed,
                node_states,
            } => {
                let id = job_id(job);
                for (node, part) in targets(job) {
                    let state = node_state(job, node, part);
                    if node_states.get(node) != Some(&state) {
                        eprintln!("job {id}: {node} {}", with_message(state.clone(), part));
                        node_states.insert(node.to_string(), state);
                    }
                }
                let now = (job.state.clone(), job.done_bytes, job.total_bytes);
                let due = match printed {
                    None => true,
                    Some((at, seen)) => *seen != now && (last || at.elapsed() >= PLAIN_EVERY),
                };
                if due {
                    eprintln!("{}", progress_line(job));
                    *printed = Some((Instant::now(), now));
                }
            }
        }
    }
}

/// The plain progress line, e.g.
/// `job 3f2a: Running 412.0 MiB/1.2 GiB (34.1%) 96.3 MiB/s ETA 8s`.
fn progress_line(job: &v1::JobStatus) -> String {
    format!(
        "job {}: {} {}/{} ({:.1}%) {}",
        job_id(job),
        job.state,
        format_size(job.done_bytes),
        format_size(job.total_bytes),
        percent_of(job.done_bytes, job.total_bytes),
        rate_eta(job)
    )
}

/// The job's rate and, when known, the time left: "96.3 MiB/s ETA 8s".
fn rate_eta(job: &v1::JobStatus) -> String {
    match eta(job) {
        Some(secs) => format!(
            "{} ETA {}",
            format_rate(job.rate_bps),
            format_duration(secs)
        ),
        None => format_rate(job.rate_bps),
    }
}

/// Seconds left at the current rate, when the node could tell.
fn eta(job: &v1::JobStatus) -> Option<u64> {
    u64::try_from(job.eta_secs).ok()
}

pub fn job_id(job: &v1::JobStatus) -> &str {
    job.spec.as_ref().map_or("", |s| s.id.as_str())
}

/// Each target node with its part of the job, if the node reported one yet.
/// Parts of nodes no longer among the targets (replaced ones) come last.
fn targets(job: &v1::JobStatus) -> Vec<(&str, Option<&v1::JobPart>)> {
    let nodes = job.spec.as_ref().map_or(&[][..], |s| &s.nodes[..]);
    let part = |node: &str| job.parts.iter().find(|p| p.node == node);
    let mut rows: Vec<_> = nodes.iter().map(|n| (n.as_str(), part(n))).collect();
    rows.extend(
        job.parts
            .iter()
            .filter(|p| !nodes.contains(&p.node))
            .map(|p| (p.node.as_str(), Some(p))),
    );
    rows
}

/// A target's state; one that has not reported yet is Pending, and a dead
/// one is marked lost.
fn node_state(job: &v1::JobStatus, node: &str, part: Option<&v1::JobPart>) -> String {
    let state = part.map_or("Pending", |p| p.state.as_str());
    if job.lost.iter().any(|n| n == node) {
        format!("{state} (lost)")
    } else {
        state.to_string()
    }
}

/// A node state followed by its part's message, if any.
fn with_message(state: String, part: Option<&v1::JobPart>) -> String {
    match part.map(|p| p.message.as_str()) {
        Some(m) if !m.is_empty() => format!("{state}: {m}"),
        _ => state,
    }
}

/// One line on what a new job targets, e.g.
/// `prewarm imagenet version 3 on 2 nodes (node-1, node-2), 1.2 GiB selected per node`.
fn targets_summary(job: &v1::JobStatus) -> String {
    let spec = job.spec.clone().unwrap_or_default();
    let mut names = spec
        .nodes
        .iter()
        .take(SUMMARY_NODES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if spec.nodes.len() > SUMMARY_NODES {
        names.push_str(&format!(", +{} more", spec.nodes.len() - SUMMARY_NODES));
    }
    format!(
        "{} {} version {} on {} node{} ({}), {} selected per node",
        shoal_proto::json::kind_name(spec.kind()),
        spec.dataset,
        spec.version,
        spec.nodes.len(),
        if spec.nodes.len() == 1 { "" } else { "s" },
        if names.is_empty() { "none" } else { &names },
        format_size(spec.total_bytes)
    )
}

/// `dataset-ctl jobs`.
pub async fn list(endpoint: &Endpoint, output: Output) -> Result<()> {
    let mut client = connect(endpoint).await?;
    let Resp::Jobs(list) = client.call(Req::Jobs(v1::ListJobs {})).await? else {
        bail!("unexpected response");
    };
    match output {
        Output::Json => print_json(&Value::Array(
            list.items.iter().map(shoal_proto::json::job).collect(),
        )),
        Output::Table => print_table(
            &[
                "ID",
                "KIND",
                "DATASET",
                "VERSION",
                "TARGETS",
                "STATE",
                "PROGRESS",
                "DONE/TOTAL",
                "AGE",
            ],
            list.items.iter().map(|j| {
                let spec = j.spec.clone().unwrap_or_default();
                let age = (now_unix_ms() / 1000 - spec.created_unix).max(0) as u64;
                vec![
                    spec.id.clone(),
                    shoal_proto::json::kind_name(spec.kind()).to_string(),
                    spec.dataset.clone(),
                    spec.version.to_string(),
                    spec.nodes.len().to_string(),
                    j.state.clone(),
                    format!("{:.1}%", percent_of(j.done_bytes, j.total_bytes)),
                    format!(
                        "{}/{}",
                        format_size(j.done_bytes),
                        format_size(j.total_bytes)
                    ),
                    format_duration(age),
                ]
            }),
        ),
    }
    Ok(())
}

/// A job in describe style with a table of its target nodes, or as JSON.
pub fn print_job(job: &v1::JobStatus, output: Output) {
    if let Output::Json = output {
        print_json(&shoal_proto::json::job(job));
        return;
    }
    let spec = job.spec.clone().unwrap_or_default();
    let list = |items: &[String], empty: &str| {
        if items.is_empty() {
            empty.to_string()
        } else {
            items.join(", ")
        }
    };
    let rows = [
        ("ID", spec.id.clone()),
        (
            "Kind",
            shoal_proto::json::kind_name(spec.kind()).to_string(),
        ),
        ("Dataset", spec.dataset.clone()),
        ("Version", spec.version.to_string()),
        ("Paths", list(&spec.paths, "<all>")),
        ("Selector", format_labels(&spec.selector)),
        ("Replicas", spec.replicas.to_string()),
        (
            "Tier",
            shoal_proto::json::tier_name(spec.tier()).to_string(),
        ),
        ("Pin", spec.pin.to_string()),
        ("State", job.state.clone()),
        ("Total", format_size(job.total_bytes)),
        (
            "Done",
            format!(
                "{} ({:.1}%)",
                format_size(job.done_bytes),
                percent_of(job.done_bytes, job.total_bytes)
            ),
        ),
        ("Rate", format_rate(job.rate_bps)),
        ("ETA", eta(job).map_or("-".into(), format_duration)),
        ("Created", ago_ms(spec.created_unix.saturating_mul(1000))),
        ("Created by", spec.created_by.clone()),
        ("Lost", list(&job.lost, "<none>")),
        ("Replaced", list(&spec.replaced, "<none>")),
    ];
    for (k, v) in rows {
        println!("{:<12} {v}", format!("{k}:"));
    }
    println!();
    print_table(
        &[
            "NODE",
            "STATE",
            "DONE",
            "TOTAL",
            "%",
            "MEMORY",
            "DISK",
            "RATE",
            "FAILED CHUNKS",
            "FROM ORIGIN",
            "FROM PEERS",
            "MESSAGE",
        ],
        targets(job).into_iter().map(|(node, part)| {
            let state = node_state(job, node, part);
            let p = part.cloned().unwrap_or_default();
            vec![
                node.to_string(),
                state,
                format_size(p.done_bytes),
                format_size(p.total_bytes),
                format!("{:.1}%", percent_of(p.done_bytes, p.total_bytes)),
                format_size(p.memory_bytes),
                format_size(p.disk_bytes),
                format_rate(p.rate_bps),
                p.failed_chunks.to_string(),
                format_size(p.origin_bytes),
                format_size(p.peer_bytes),
                p.message,
            ]
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(node: &str, state: &str) -> v1::JobPart {
        v1::JobPart {
            node: node.into(),
            state: state.into(),
            ..Default::default()
        }
    }

    fn job(state: &str) -> v1::JobStatus {
        v1::JobStatus {
            spec: Some(v1::JobSpec {
                id: "3f2a".into(),
                kind: v1::JobKind::Evict as i32,
                dataset: "imagenet".into(),
                version: 3,
                paths: vec!["train/".into()],
                nodes: vec!["node-1".into(), "node-2".into()],
                selector: HashMap::from([("zone".into(), "a".into())]),
                tier: v1::TierTarget::Disk as i32,
                created_unix: 1_700_000_000,
                ..Default::default()
            }),
            state: state.into(),
            total_bytes: 1 << 30,
            done_bytes: 256 << 20,
            rate_bps: 100 << 20,
            eta_secs: 8,
            ..Default::default()
        }
    }

    #[test]
    fn job_json_has_the_documented_shape() {
        let mut j = job("Running");
        j.lost = vec!["node-2".into()];
        j.parts = vec![v1::JobPart {
            done_bytes: 7,
            failed_chunks: 2,
            ..part("node-1", "Running")
        }];
        let v = shoal_proto::json::job(&j);
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        let mut want = vec![
            "id",
            "kind",
            "dataset",
            "version",
            "paths",
            "nodes",
            "selector",
            "replicas",
            "tier",
            "pin",
            "state",
            "total_bytes",
            "done_bytes",
            "rate_bps",
            "eta_secs",
            "created_unix",
            "created_by",
            "lost",
            "replaced",
            "cancelled",
            "parts",
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(v["kind"], "evict");
        assert_eq!(v["tier"], "disk");
        assert_eq!(v["version"], 3);
        assert_eq!(v["selector"], serde_json::json!({"zone": "a"}));
        assert_eq!(v["eta_secs"], 8);
        assert_eq!(v["lost"], serde_json::json!(["node-2"]));
        let p = v["parts"][0].as_object().unwrap();
        let mut keys: Vec<&str> = p.keys().map(String::as_str).collect();
        keys.sort();
        let mut want = vec![
            "node",
            "state",
            "total_bytes",
            "done_bytes",
            "memory_bytes",
            "disk_bytes",
            "rate_bps",
            "failed_chunks",
            "origin_bytes",
            "peer_bytes",
            "updated_ms",
            "started_unix_ms",
            "finished_unix_ms",
            "message",
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(p["done_bytes"], 7);
        assert_eq!(p["failed_chunks"], 2);

        j.eta_secs = -1;
        assert!(shoal_proto::json::job(&j)["eta_secs"].is_null());
    }

    #[test]
    fn selector_parses_pairs() {
        let s = parse_selector(&["zone=a".into(), " gpu = h100 ".into(), "zone=a".into()]).unwrap();
        assert_eq!(
            s,
            HashMap::from([("zone".into(), "a".into()), ("gpu".into(), "h100".into())])
        );
        assert!(parse_selector(&[]).unwrap().is_empty());
    }

    #[test]
    fn selector_rejects_malformed() {
        for bad in ["zone", "=a", "zone=", "a=b=c", " = "] {
            let e = parse_selector(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains("expected KEY=VALUE"), "{bad}: {e}");
        }
        let e = parse_selector(&["zone=a".into(), "zone=b".into()]).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    #[test]
    fn node_list_is_split_trimmed_and_deduplicated() {
        assert_eq!(
            parse_nodes(" node-1, ,node-2,,node-1 ,").unwrap(),
            ["node-1", "node-2"]
        );
        assert!(parse_nodes(" , ").is_err());
    }

    #[test]
    fn target_flags_are_exclusive_and_evict_defaults_to_all_nodes() {
        use clap::Parser;
        #[derive(Parser)]
        struct Prewarm {
            #[command(flatten)]
            t: PrewarmTargets,
        }
        #[derive(Parser)]
        struct Evict {
            #[command(flatten)]
            t: NodeTargets,
        }
        assert!(Prewarm::try_parse_from(["x", "--nodes", "a", "--all-nodes"]).is_err());
        assert!(Prewarm::try_parse_from(["x", "--selector", "a=b", "--replicas", "2"]).is_err());
        assert!(Prewarm::try_parse_from(["x", "--replicas", "0"]).is_err());
        let (spec, all) = Prewarm::try_parse_from(["x", "--selector", "a=b", "--selector", "c=d"])
            .unwrap()
            .t
            .resolve()
            .unwrap();
        assert_eq!(spec.selector.len(), 2);
        assert!(!all);
        let (spec, all) = Prewarm::try_parse_from(["x"]).unwrap().t.resolve().unwrap();
        assert!(spec.nodes.is_empty() && spec.selector.is_empty() && spec.replicas == 0 && !all);

        assert!(Evict::try_parse_from(["x", "--nodes", "a", "--all-nodes"]).is_err());
        let resolve = |args: &[&str]| {
            let (spec, all) = Evict::try_parse_from(args).unwrap().t.resolve().unwrap();
            (spec.nodes, all)
        };
        assert_eq!(resolve(&["x"]), (vec![], true));
        assert_eq!(resolve(&["x", "--all-nodes"]), (vec![], true));
        assert_eq!(
            resolve(&["x", "--nodes", "a,b"]),
            (vec!["a".into(), "b".into()], false)
        );
    }

    #[test]
    fn plain_progress_line() {
        assert_eq!(
            progress_line(&job("Running")),
            "job 3f2a: Running 256.0 MiB/1.0 GiB (25.0%) 100.0 MiB/s ETA 8s"
        );
        let mut j = job("Pending");
        j.eta_secs = -1;
        j.rate_bps = 0;
        assert_eq!(
            progress_line(&j),
            "job 3f2a: Pending 256.0 MiB/1.0 GiB (25.0%) 0 B/s"
        );
    }

    #[test]
    fn outcome_decides_when_to_stop_and_the_exit_status() {
        assert_eq!(outcome(&job("Pending")), None);
        assert_eq!(outcome(&job("Running")), None);
        assert_eq!(outcome(&job("Complete")), Some(Ok(())));
        assert_eq!(
            outcome(&job("Cancelled")),
            Some(Err("job 3f2a was cancelled".into()))
        );

        let mut j = job("Failed");
        j.parts = vec![
            part("node-1", "Complete"),
            v1::JobPart {
                failed_chunks: 3,
                message: "origin: access denied".into(),
                ..part("node-2", "Failed")
            },
        ];
        j.lost = vec!["node-3".into()];
        assert_eq!(
            outcome(&j),
            Some(Err(
                "job 3f2a Failed: node-2: 3 chunks failed: origin: access denied; node-3: lost"
                    .into()
            ))
        );
        j.parts.clear();
        j.lost.clear();
        assert_eq!(outcome(&j), Some(Err("job 3f2a Failed".into())));
    }

    #[test]
    fn targets_include_unreported_and_replaced_nodes() {
        let mut j = job("Running");
        j.parts = vec![part("node-9", "Running"), part("node-2", "Complete")];
        j.lost = vec!["node-1".into()];
        let rows: Vec<(&str, String)> = targets(&j)
            .into_iter()
            .map(|(n, p)| (n, node_state(&j, n, p)))
            .collect();
        assert_eq!(
            rows,
            [
                ("node-1", "Pending (lost)".to_string()),
                ("node-2", "Complete".to_string()),
                ("node-9", "Running".to_string()),
            ]
        );
    }

    #[test]
    fn bar_templates_parse() {
        for t in [OVERALL_TEMPLATE, NODE_TEMPLATE] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }
}
