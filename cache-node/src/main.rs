//! `cache-node`: the Shoal daemon on every GPU host.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shoal_cache_node::config::{Config, Size};
use shoal_cache_node::durability::{self, VerifyMode};
use shoal_cache_node::mesh::{tls, Mesh, MeshHost};
use shoal_cache_node::metrics::Metrics;
use shoal_cache_node::{api, node::Node};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Shoal cache node: caches datasets from S3 or local directories in a
/// memory and a disk tier and serves them to local readers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// QUIC address for peers (enables the mesh), e.g. 0.0.0.0:7071.
    #[arg(long, help_heading = "Mesh")]
    peer_listen: Option<String>,
    /// Address peers use to reach this node (default: --peer-listen).
    #[arg(long, help_heading = "Mesh")]
    peer_advertise: Option<String>,
    /// Seed peer address; repeatable.
    #[arg(long = "seed", help_heading = "Mesh")]
    seeds: Vec<String>,
    /// Directory with ca.pem, node.pem and node.key.
    #[arg(long, help_heading = "Mesh")]
    tls_dir: Option<PathBuf>,
    /// Milliseconds without a heartbeat after which a peer is declared dead
    /// (default 3000); also the most a frozen peer can cost a reader.
    #[arg(long, help_heading = "Mesh")]
    peer_dead_after_ms: Option<u64>,
    /// When chunks recovered at start are hashed again before they are
    /// served: after an unclean stop across a reboot (auto), always, never.
    #[arg(long, value_enum)]
    verify_on_start: Option<VerifyMode>,
    /// Manifest versions kept per dataset whether used or not (default 2).
    #[arg(long)]
    keep_versions: Option<usize>,
    /// Older versions are dropped once no request used them for this long
    /// (default 600; a mount's keepalive uses its version every second).
    #[arg(long)]
    version_grace_secs: Option<u64>,
    /// Chunk requests served to peers at once (default 8); when all are
    /// busy, askers are redirected to other nodes holding the chunk.
    #[arg(long, help_heading = "Mesh")]
    peer_serve_concurrency: Option<usize>,
    /// Join the mesh (membership, catalog) but never fetch chunks from peers
    /// (every node reads the origin itself; for comparisons).
    #[arg(long, help_heading = "Mesh")]
    no_peer_fetch: bool,
    /// TOML configuration file; flags override it.
    #[arg(long, env = "SHOAL_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the index and the default disk tier.
    #[arg(long, help_heading = "Storage")]
    data_dir: Option<PathBuf>,
    /// Memory tier directory (a tmpfs).
    #[arg(long, help_heading = "Storage")]
    memory_dir: Option<PathBuf>,
    /// Memory tier quota, e.g. 2GiB; 0 disables the tier.
    #[arg(long, value_parser = parse_size, help_heading = "Storage")]
    memory_quota: Option<u64>,
    /// Disk tier directory.
    #[arg(long, help_heading = "Storage")]
    disk_dir: Option<PathBuf>,
    /// Disk tier quota, e.g. 100GiB; 0 disables the tier.
    #[arg(long, value_parser = parse_size, help_heading = "Storage")]
    disk_quota: Option<u64>,
    /// Control API address (TCP).
    #[arg(long, help_heading = "Network")]
    listen: Option<String>,
    /// Admin HTTP address (/healthz, /readyz, /metrics).
    #[arg(long, help_heading = "Network")]
    admin: Option<String>,
    /// Read API Unix socket path.
    #[arg(long, help_heading = "Network")]
    socket: Option<PathBuf>,
    /// File (mode 0600) with a token every TCP API request must carry.
    #[arg(long, env = "SHOAL_API_TOKEN_FILE", help_heading = "Network")]
    api_token_file: Option<PathBuf>,
    /// Serve the TCP control API on a non-loopback address without a token
    /// (refused otherwise).
    #[arg(long, help_heading = "Network")]
    insecure_listen: bool,
    /// Node name.
    #[arg(long)]
    name: Option<String>,
    /// Node label KEY=VALUE (zone, rack, GPU model...); repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"], env = "SHOAL_LOG_FORMAT")]
    log_format: String,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Cluster certificates for the mesh.
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(clap::Subcommand, Debug)]
enum CaCommand {
    /// Create a cluster CA (ca.pem, ca.key with mode 0600) in a directory.
    Init {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a certificate for one node with the cluster CA.
    Issue {
        /// Directory of the CA.
        #[arg(long)]
        ca: PathBuf,
        /// Node name.
        #[arg(long)]
        name: String,
        /// Output directory (node.pem, node.key with mode 0600, ca.pem).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Reads an API token file, refusing one other users can read.
/// Whether a listen address only accepts local connections.
fn is_loopback(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => addr.rsplit_once(':').is_some_and(|(h, _)| h == "localhost"),
    }
}

fn read_token(path: &std::path::Path) -> anyhow::Result<Arc<str>> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).with_context(|| format!("API token file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "API token file {} must not be readable by group or others (chmod 600)",
            path.display()
        );
    }
    let token = std::fs::read_to_string(path)?.trim().to_string();
    if token.len() < 16 {
        anyhow::bail!(
            "API token in {} is shorter than 16 characters",
            path.display()
        );
    }
    Ok(token.into())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    shoal_proto::units::parse_size(s)
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Command::Ca(ca)) = &args.command {
        let done = match ca {
            CaCommand::Init { out } => tls::init_ca(out),
            CaCommand::Issue { ca, name, out } => tls::issue(ca, name, out),
        };
        return match done {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cache-node: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    init_tracing(&args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("shoal-node")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cache-node: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cache-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p).map_err(anyhow::Error::msg)?,
        None => Config::default(),
    };
    if args.data_dir.is_some() {
        cfg.data_dir = args.data_dir;
    }
    if args.memory_dir.is_some() {
        cfg.memory.dir = args.memory_dir;
    }
    if let Some(q) = args.memory_quota {
        cfg.memory.quota = Some(Size(q));
    }
    if args.disk_dir.is_some() {
        cfg.disk.dir = args.disk_dir;
    }
    if let Some(q) = args.disk_quota {
        cfg.disk.quota = Some(Size(q));
    }
    if args.listen.is_some() {
        cfg.listen = args.listen;
    }
    if args.admin.is_some() {
        cfg.admin = args.admin;
    }
    if args.socket.is_some() {
        cfg.socket = args.socket;
    }
    if args.name.is_some() {
        cfg.name = args.name;
    }
    cfg.labels.extend(args.labels);
    if args.peer_listen.is_some() {
        cfg.mesh.listen = args.peer_listen;
    }
    if args.peer_advertise.is_some() {
        cfg.mesh.advertise = args.peer_advertise;
    }
    if !args.seeds.is_empty() {
        cfg.mesh.seeds = args.seeds;
    }
    if args.tls_dir.is_some() {
        cfg.mesh.tls_dir = args.tls_dir;
    }
    if args.peer_dead_after_ms.is_some() {
        cfg.mesh.dead_after_ms = args.peer_dead_after_ms;
    }
    if args.peer_serve_concurrency.is_some() {
        cfg.mesh.serve_concurrency = args.peer_serve_concurrency;
    }
    if args.verify_on_start.is_some() {
        cfg.verify_on_start = args.verify_on_start;
    }
    if args.keep_versions.is_some() {
        cfg.keep_versions = args.keep_versions;
    }
    if args.version_grace_secs.is_some() {
        cfg.version_grace_secs = args.version_grace_secs;
    }
    let resolved = cfg.resolve().map_err(anyhow::Error::msg)?;
    let token = match &args.api_token_file {
        Some(p) => Some(read_token(p)?),
        None => None,
    };
    if token.is_none() && !args.insecure_listen && !is_loopback(&resolved.listen) {
        anyhow::bail!(
            "refusing to serve the control API on {} without --api-token-file: anyone who can reach it could create datasets and read their data (set a token, listen on loopback, or pass --insecure-listen if the network is trusted)",
            resolved.listen
        );
    }

    let metrics = Arc::new(Metrics::default());
    let node = Node::open(resolved.node.clone(), metrics).context("opening node state")?;
    let listener = tokio::net::TcpListener::bind(&resolved.listen)
        .await
        .with_context(|| format!("binding control API on {}", resolved.listen))?;
    let admin = tokio::net::TcpListener::bind(&resolved.admin)
        .await
        .with_context(|| format!("binding admin endpoint on {}", resolved.admin))?;

    let cancel = CancellationToken::new();
    let mesh = match resolved.mesh.clone() {
        Some(m) => {
            let host: std::sync::Weak<dyn MeshHost> = Arc::downgrade(&node) as _;
            let mesh = Mesh::start(m, host, cancel.child_token()).context("starting the mesh")?;
            node.set_mesh(mesh.clone(), !args.no_peer_fetch);
            Some(mesh)
        }
        None => None,
    };
    node.start_jobs();
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    {
        let (n, c, p) = (node.clone(), cancel.clone(), resolved.socket.clone());
        tasks.spawn(async move { api::serve_unix(n, &p, c).await.context("read API socket") });
    }
    {
        let (n, c) = (node.clone(), cancel.clone());
        tasks.spawn(async move {
            api::serve_tcp(n, listener, token, c)
                .await
                .context("control API")
        });
    }
    {
        let (n, c, r) = (node.clone(), cancel.clone(), ready.clone());
        tasks.spawn(async move {
            api::admin::serve(n, admin, r, c)
                .await
                .context("admin endpoint")
        });
    }
    {
        let (n, c) = (node.clone(), cancel.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = c.cancelled() => return Ok(()),
                    _ = tick.tick() => {
                        if let Err(e) = n.store().flush_access() {
                            tracing::warn!(error = %e, "persisting access statistics failed");
                        }
                        if let Err(e) = n.collect_versions().await {
                            tracing::warn!(error = %e, "dropping unused manifest versions failed");
                        }
                    }
                }
            }
        });
    }
    if node.store().unverified_chunks() > 0 {
        let (n, c) = (node.clone(), cancel.clone());
        tasks.spawn(async move {
            let store = n.store();
            let start = std::time::Instant::now();
            tracing::info!(
                chunks = store.unverified_chunks(),
                "verifying recovered chunks in the background"
            );
            tokio::select! {
                _ = c.cancelled() => {}
                r = store.verify_recovered() => tracing::info!(
                    checked = r.checked,
                    bytes = r.bytes,
                    corrupt_dropped = r.corrupt,
                    secs = start.elapsed().as_secs_f64(),
                    "recovered chunks verified"
                ),
            }
            // A server task ending stops the node: this one ends with it.
            c.cancelled().await;
            Ok(())
        });
    }
    ready.store(true, Ordering::SeqCst);
    tracing::info!(
        name = %resolved.node.name,
        listen = %resolved.listen,
        admin = %resolved.admin,
        socket = %resolved.socket.display(),
        "cache-node ready"
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut result = Ok(());
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        Some(r) = tasks.join_next() => {
            result = r.context("server task panicked").and_then(|r| r);
        }
    }
    ready.store(false, Ordering::SeqCst);
    cancel.cancel();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.context("server task panicked").and_then(|r| r) {
            tracing::warn!("{e:#}");
        }
    }
    node.shutdown_jobs().await;
    if let Some(mesh) = mesh {
        mesh.shutdown().await;
    }
    node.store().flush_access()?;
    // A clean stop: tiers and log durable, so the next start trusts them.
    node.store().sync().await.context("syncing the tiers")?;
    durability::end_clean(&resolved.node.data_dir).context("recording a clean stop")?;
    tracing::info!("cache-node stopped");
    result
}
