//! `scheduler`: the deployment scheduler (`serve`), its node agent
//! (`agent`), and kubectl-like client commands.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use shoal_scheduler::{agent, model, placement, server};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Places GPU deployments where their data makes them start fastest"
)]
struct Cli {
    /// Scheduler URL for client commands and agents.
    #[arg(
        long,
        global = true,
        env = "SHOAL_SCHEDULER",
        default_value = "http://127.0.0.1:7400"
    )]
    server: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum What {
    Deployments,
    Replicas,
    Nodes,
}

#[derive(Subcommand, Debug)]
enum BlacklistCmd {
    /// Place nothing new on HOST.
    Add {
        host: String,
    },
    Rm {
        host: String,
    },
    Ls {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the scheduler.
    Serve {
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: String,
        #[arg(long, default_value = server::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// A host silent this long (ms) is lost and its replicas replaced.
        #[arg(long, default_value_t = 5000)]
        lost_after_ms: u64,
        /// How long stopped containers stay reusable, in hours (at most 168 = 7 days).
        #[arg(long, default_value_t = 24)]
        reuse_hours: u64,
        /// Seconds a replica takes to start once its data is local (estimate term).
        #[arg(long, default_value_t = placement::Rates::default().container_start_s)]
        container_start_secs: f64,
    },
    /// Run the node agent of this host.
    Agent {
        #[arg(long)]
        name: String,
        /// Address of the agent's HTTP endpoint (logs).
        #[arg(long, default_value = "127.0.0.1:7401")]
        listen: String,
        #[arg(long, default_value = "/var/lib/shoal/agent")]
        work_dir: PathBuf,
        #[arg(long, default_value = "")]
        gpu_model: String,
        #[arg(long, default_value_t = 0)]
        gpus: u32,
        #[arg(long, default_value_t = 0)]
        cpu_millis: u64,
        #[arg(long, default_value = "0", value_parser = shoal_proto::units::parse_size)]
        memory: u64,
        /// k=v, repeatable (zone, rack...).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// This host's cache node: its mesh name, control API, admin HTTP, socket.
        #[arg(long)]
        cache_node: String,
        #[arg(long, default_value = "127.0.0.1:7070")]
        cache_api: String,
        #[arg(long, default_value = "127.0.0.1:9464")]
        cache_admin: String,
        #[arg(long, default_value = "unix:///var/lib/shoal/node.sock")]
        cache_socket: String,
        /// fuse-client binary (default: next to this one).
        #[arg(long)]
        fuse_client: Option<PathBuf>,
    },
    #[command(hide = true)]
    RunReplica { spec: PathBuf },
    /// Create or update a deployment from a YAML/JSON file ("-" = stdin).
    Apply {
        #[arg(short, long)]
        filename: String,
    },
    /// List deployments, replicas or nodes.
    Get {
        what: What,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one deployment (or replica) in full.
    Describe { name: String },
    /// Set a ReplicaSet's replica count.
    Scale {
        name: String,
        #[arg(long)]
        replicas: i64,
    },
    /// Stop one replica; with --decrease-replicas it is not replaced.
    Stop {
        replica: String,
        #[arg(long)]
        decrease_replicas: bool,
    },
    /// Delete a deployment and stop its replicas.
    Delete { name: String },
    /// Hosts that get no new replicas.
    #[command(subcommand)]
    Blacklist(BlacklistCmd),
    /// Replica events (scheduled, warming, started, ready, exited, lost, stopped).
    Events {
        #[arg(long)]
        follow: bool,
        #[arg(long, default_value_t = 0)]
        since: u64,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// A replica's stdout and stderr.
    Logs { replica: String },
    /// Why a replica was placed where it was: every candidate's filter
    /// result and estimated startup time by path.
    Explain {
        replica: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
        _ => Err(format!("{s:?}: expected key=value")),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Cmd::RunReplica { spec } = &cli.command {
        return match agent::run_replica(spec) {
            Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("run-replica: {e:#}");
                std::process::ExitCode::from(125)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    shoal_proto::cli::run(run(cli))
}

async fn shutdown_signal(cancel: tokio_util::sync::CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    cancel.cancel();
}

async fn run(cli: Cli) -> Result<()> {
    let c = ApiClient::new(&cli.server)?;
    match cli.command {
        Cmd::RunReplica { .. } => unreachable!("handled before the runtime"),
        Cmd::Serve {
            listen,
            data_dir,
            lost_after_ms,
            reuse_hours,
            container_start_secs,
        } => {
            if reuse_hours > 168 {
                bail!("--reuse-hours {reuse_hours} is above the 7-day limit (168)");
            }
            let s = server::Scheduler::open(server::Config {
                data_dir,
                lost_after: Duration::from_millis(lost_after_ms),
                reuse_ttl: Duration::from_secs(reuse_hours * 3600),
                rates: placement::Rates {
                    container_start_s: container_start_secs,
                    ..Default::default()
                },
            })?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let cancel = tokio_util::sync::CancellationToken::new();
            tokio::spawn(shutdown_signal(cancel.clone()));
            tracing::info!(%listen, "scheduler ready");
            server::serve(s, listener, cancel).await?;
        }
        Cmd::Agent {
            name,
            listen,
            work_dir,
            gpu_model,
            gpus,
            cpu_millis,
            memory,
            labels,
            cache_node,
            cache_api,
            cache_admin,
            cache_socket,
            fuse_client,
        } => {
            let fuse_client = match fuse_client {
                Some(p) => p,
                None => std::env::current_exe()?
                    .parent()
                    .context("binary directory")?
                    .join("fuse-client"),
            };
            let a = agent::Agent::new(agent::Config {
                node: model::NodeInfo {
                    name,
                    agent_addr: listen.clone(),
                    gpu_model,
                    gpus,
                    cpu_millis,
                    memory_bytes: memory,
                    labels: labels.into_iter().collect(),
                    cache_node,
                    cache_api,
                    cache_admin,
                },
                scheduler: cli.server.trim_end_matches('/').to_string(),
                work_dir,
                fuse_client,
                cache_socket,
            })?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let cancel = tokio_util::sync::CancellationToken::new();
            tokio::spawn(shutdown_signal(cancel.clone()));
            let http = {
                let (app, cancel) = (a.router(), cancel.clone());
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move { cancel.cancelled().await })
                        .await
                })
            };
            tracing::info!(%listen, "agent ready");
            Arc::clone(&a).run(cancel).await;
            http.await??;
        }
        Cmd::Apply { filename } => {
            let text = if filename == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&filename)
                    .with_context(|| format!("cannot read {filename}"))?
            };
            let v = c
                .send(c.http.post(c.url("/v1/deployments")).body(text))
                .await?;
            println!(
                "deployment.shoal/{} applied (generation {})",
                v["deployment"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default(),
                v["generation"]
            );
        }
        Cmd::Get { what, output } => {
            let path = match what {
                What::Deployments => "/v1/deployments",
                What::Replicas => "/v1/replicas",
                What::Nodes => "/v1/nodes",
            };
            let v = c.get(path).await?;
            if output == Output::Json {
                print_json(&v);
            } else {
                print_list(what, &v);
            }
        }
        Cmd::Describe { name } => match c.get(&format!("/v1/deployments/{name}")).await {
            Ok(v) => print_json(&v),
            Err(_) => print_json(&c.get(&format!("/v1/replicas/{name}")).await?),
        },
        Cmd::Scale { name, replicas } => {
            let v = c
                .send(
                    c.http
                        .post(c.url(&format!("/v1/deployments/{name}/scale")))
                        .json(&serde_json::json!({"replicas": replicas})),
                )
                .await?;
            println!("deployment.shoal/{name} scaled to {}", v["replicas"]);
        }
        Cmd::Stop {
            replica,
            decrease_replicas,
        } => {
            c.send(
                c.http
                    .post(c.url(&format!("/v1/replicas/{replica}/stop")))
                    .json(&serde_json::json!({"decrease_replicas": decrease_replicas})),
            )
            .await?;
            println!("replica.shoal/{replica} stopping");
        }
        Cmd::Delete { name } => {
            c.send(c.http.delete(c.url(&format!("/v1/deployments/{name}"))))
                .await?;
            println!("deployment.shoal/{name} deleted");
        }
        Cmd::Blacklist(b) => match b {
            BlacklistCmd::Add { host } => {
                c.send(c.http.post(c.url(&format!("/v1/blacklist/{host}"))))
                    .await?;
                println!("host {host} blacklisted");
            }
            BlacklistCmd::Rm { host } => {
                c.send(c.http.delete(c.url(&format!("/v1/blacklist/{host}"))))
                    .await?;
                println!("host {host} removed from the blacklist");
            }
            BlacklistCmd::Ls { output } => {
                let v = c.get("/v1/blacklist").await?;
                if output == Output::Json {
                    print_json(&v);
                } else {
                    for h in v.as_array().into_iter().flatten() {
                        println!("{}", h["host"].as_str().unwrap_or_default());
                    }
                }
            }
        },
        Cmd::Events {
            follow,
            since,
            output,
        } => {
            let mut since = since;
            loop {
                let wait = if follow { 30 } else { 0 };
                let v = c
                    .get(&format!("/v1/events?since={since}&wait={wait}"))
                    .await?;
                if output == Output::Json && !follow {
                    // A listing is one JSON array; --follow streams one object a line.
                    print_json(&v);
                    break;
                }
                for e in v.as_array().into_iter().flatten() {
                    since = since.max(e["seq"].as_u64().unwrap_or(0));
                    if output == Output::Json {
                        println!("{e}");
                    } else {
                        println!(
                            "{:>6}  {:<9} {:<24} {:<10} {} {}",
                            e["seq"],
                            e["kind"].as_str().unwrap_or_default(),
                            e["replica"].as_str().unwrap_or_default(),
                            e["host"].as_str().unwrap_or_default(),
                            e["endpoint"].as_str().unwrap_or_default(),
                            e["message"].as_str().unwrap_or_default()
                        );
                    }
                }
                std::io::stdout().flush()?;
                if !follow {
                    break;
                }
            }
        }
        Cmd::Logs { replica } => {
            let text = c.text(&format!("/v1/replicas/{replica}/logs")).await?;
            print!("{text}");
        }
        Cmd::Explain { replica, output } => {
            let v = c.get(&format!("/v1/replicas/{replica}")).await?;
            let ex = &v["explain"];
            if ex.is_null() {
                bail!(
                    "replica {replica} has not been placed yet: {}",
                    v["message"].as_str().unwrap_or_default()
                );
            }
            if output == Output::Json {
                print_json(ex);
            } else {
                print_explain(&v);
            }
        }
    }
    Ok(())
}

struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    fn new(base: &str) -> Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(65))
                .build()?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn raw(&self, req: reqwest::RequestBuilder) -> Result<String> {
        let resp = req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the scheduler at {} ({e}); set --server or SHOAL_SCHEDULER",
                self.base
            )
        })?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{}", text.trim());
        }
        Ok(text)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        Ok(serde_json::from_str(&self.raw(req).await?)?)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(self.url(path))).await
    }

    async fn text(&self, path: &str) -> Result<String> {
        self.raw(self.http.get(self.url(path))).await
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_rows(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", text.join("   ").trim_end());
    };
    line(headers.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_list(what: What, v: &Value) {
    let items = v.as_array().cloned().unwrap_or_default();
    match what {
        What::Deployments => print_rows(
            &["NAME", "KIND", "READY", "REPLICAS", "PHASE", "GENERATION"],
            items
                .iter()
                .map(|d| {
                    vec![
                        s(&d["name"]),
                        s(&d["kind"]),
                        s(&d["ready"]),
                        s(&d["replicas"]),
                        s(&d["phase"]),
                        s(&d["generation"]),
                    ]
                })
                .collect(),
        ),
        What::Replicas => print_rows(
            &[
                "NAME",
                "DEPLOYMENT",
                "STATE",
                "HOST",
                "ESTIMATE",
                "EXIT",
                "MESSAGE",
            ],
            items
                .iter()
                .map(|r| {
                    vec![
                        s(&r["id"]),
                        s(&r["deployment"]),
                        s(&r["state"]),
                        s(&r["host"]),
                        r["estimate_s"]
                            .as_f64()
                            .map_or("-".into(), |e| format!("{e:.1}s")),
                        s(&r["exit_code"]),
                        s(&r["message"]),
                    ]
                })
                .collect(),
        ),
        What::Nodes => print_rows(
            &[
                "NAME",
                "STATE",
                "GPU",
                "GPUS FREE",
                "CACHE NODE",
                "BLACKLISTED",
                "LABELS",
            ],
            items
                .iter()
                .map(|n| {
                    let labels: Vec<String> = n["labels"]
                        .as_object()
                        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
                        .unwrap_or_default();
                    vec![
                        s(&n["name"]),
                        s(&n["state"]),
                        s(&n["gpu_model"]),
                        format!("{}/{}", s(&n["gpus_free"]), s(&n["gpus"])),
                        s(&n["cache_node"]),
                        s(&n["blacklisted"]),
                        labels.join(","),
                    ]
                })
                .collect(),
        ),
    }
}

fn print_explain(r: &Value) {
    let ex = &r["explain"];
    println!("Replica:  {}", s(&r["id"]));
    println!("Chosen:   {}", s(&ex["chosen"]));
    println!("Start:    {}", s(&ex["start"]));
    println!("Reason:   {}", s(&ex["reason"]));
    println!();
    let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    print_rows(
        &[
            "HOST",
            "FILTER",
            "WARM",
            "MEMORY s",
            "DISK s",
            "ZONE PEERS s",
            "PEERS s",
            "ORIGIN s",
            "START s",
            "ESTIMATE s",
            "SPREAD s",
            "SCORE",
        ],
        ex["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let filtered = c["filtered"].as_str().unwrap_or_default();
                if filtered.is_empty() {
                    vec![
                        s(&c["host"]),
                        "ok".into(),
                        format!("{:.0}%", c["warm_fraction"].as_f64().unwrap_or(0.0) * 100.0),
                        f(&c["memory_s"]),
                        f(&c["disk_s"]),
                        f(&c["zone_peer_s"]),
                        f(&c["cluster_peer_s"]),
                        f(&c["origin_s"]),
                        format!(
                            "{}{}",
                            f(&c["container_s"]),
                            if c["reused"] == true { " (reuse)" } else { "" }
                        ),
                        f(&c["estimate_s"]),
                        f(&c["spread_s"]),
                        f(&c["score"]),
                    ]
                } else {
                    let mut v = vec![s(&c["host"]), filtered.to_string()];
                    v.extend(std::iter::repeat_n("-".to_string(), 10));
                    v
                }
            })
            .collect(),
    );
}
