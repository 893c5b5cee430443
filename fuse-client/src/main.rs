//! `fuse-client`: mounts one dataset read-only at a directory, served by the
//! local cache node. Runs in the foreground, as a container sidecar does.

mod core;
mod fuse;
mod inodes;
mod prefetch;
mod stalls;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fuser::MountOption;
use shoal_proto::client::Endpoint;

/// Mount a Shoal dataset read-only.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Cache node read API: unix:///path/to/node.sock (default) or host:port.
    #[arg(
        long,
        env = "SHOAL_ENDPOINT",
        default_value = "unix:///var/lib/shoal/node.sock"
    )]
    endpoint: String,
    /// Dataset to mount.
    #[arg(long)]
    dataset: String,
    /// Manifest version to pin (default: the latest at mount time).
    #[arg(long, default_value_t = 0)]
    version: u64,
    /// Let other users (e.g. a non-root application container) read the mount.
    #[arg(long)]
    allow_other: bool,
    /// Written once the mount is ready (contains the mounted version); removed at unmount.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// How long any request waits for the cache node (unreachable, restarting
    /// or frozen) before the reader gets EIO. Readers never wait longer.
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    retry_secs: Duration,
    /// Owner of every entry (default: the origin's owner for local and NFS
    /// origins, else the user running fuse-client).
    #[arg(long)]
    uid: Option<u32>,
    /// Group of every entry (default as for --uid).
    #[arg(long)]
    gid: Option<u32>,
    /// Permission bits of every file, octal (default: the origin's; S3
    /// objects are 0444).
    #[arg(long, value_parser = parse_mode)]
    file_mode: Option<u16>,
    /// Permission bits of every directory, octal (default: the origin's;
    /// S3 prefixes are 0555).
    #[arg(long, value_parser = parse_mode)]
    dir_mode: Option<u16>,
    /// Prefetch bytes in flight for this mount, e.g. 256MiB.
    #[arg(long, default_value = "256MiB", value_parser = shoal_proto::units::parse_size)]
    prefetch_budget: u64,
    /// Where to mount (must be an existing directory).
    mountpoint: PathBuf,
}

fn parse_mode(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode (e.g. 0640)"))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("{s:?}: {e}"))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fuse-client: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Checks the mount point; a mount left by a fuse-client that died (its
/// directory answers ENOTCONN) is lazily unmounted so this start can mount.
fn prepare_mountpoint(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("mount point {} is not a directory", path.display()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(path = %path.display(), "stale FUSE mount from a previous run; unmounting it");
            let status = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(path)
                .status()
                .context("running fusermount3 -uz")?;
            if !status.success() {
                bail!(
                    "cannot clear stale mount at {} (fusermount3 -uz failed)",
                    path.display()
                );
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("mount point {} is unusable", path.display())),
    }
}

/// Makes sure the mount point is detached: fuser's own unmount does not
/// always take effect with auto_unmount, and a lazy detach lets the kernel
/// end the session once the last open file closes.
fn detach(path: &Path) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; umount2 touches no memory of ours.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EPERM) {
            let _ = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(path)
                .status();
        }
    }
}

fn run(args: Args) -> Result<()> {
    prepare_mountpoint(&args.mountpoint)?;
    let endpoint = Endpoint::parse(&args.endpoint)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("shoal-fuse-io")
        .enable_all()
        .build()
        .context("starting runtime")?;
    let connect = core::Core::connect(core::Settings {
        endpoint,
        dataset: args.dataset.clone(),
        version: args.version,
        retry_for: args.retry_secs,
        prefetch_budget: args.prefetch_budget,
    });
    // A node that accepts the connection but never answers must not hang
    // the start either.
    let core = rt
        .block_on(async { tokio::time::timeout(args.retry_secs, connect).await })
        .unwrap_or(Err(core::FsError::TimedOut(args.retry_secs)))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot mount dataset {:?}", args.dataset))?;
    let version = core.version();
    let stats = Arc::new(fuse::Stats::default());
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (me_uid, me_gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let view = fuse::Presentation {
        uid: args.uid.unwrap_or(me_uid),
        gid: args.gid.unwrap_or(me_gid),
        force_uid: args.uid.is_some(),
        force_gid: args.gid.is_some(),
        file_mode: args.file_mode,
        dir_mode: args.dir_mode,
    };
    let fs = fuse::ShoalFs::new(core.clone(), rt.handle().clone(), stats.clone(), view);
    let mut options = vec![
        MountOption::RO,
        MountOption::FSName(format!("shoal:{}", args.dataset)),
        MountOption::Subtype("shoal".into()),
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    if args.allow_other {
        options.push(MountOption::AllowOther);
    }
    let mut session = fuser::Session::new(fs, &args.mountpoint, &options)
        .with_context(|| format!("cannot mount at {}", args.mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    let fuse_thread = std::thread::Builder::new()
        .name("shoal-fuse".into())
        .spawn(move || session.run())
        .context("starting FUSE thread")?;
    tracing::info!(dataset = %args.dataset, version, mountpoint = %args.mountpoint.display(), "mounted");
    if let Some(f) = &args.ready_file {
        std::fs::write(f, format!("{version}\n"))
            .with_context(|| format!("writing {}", f.display()))?;
    }

    // Keep leases alive across node restarts (an owned task, aborted at
    // shutdown) until a signal arrives or the mount goes away.
    let keepalive = {
        let core = core.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                core.keepalive().await;
            }
        })
    };
    // What the inode table holds, at debug level whenever it changed (at
    // most once a second; the unmount line has the last figures).
    let report = {
        let core = core.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last = core.counts();
            loop {
                tick.tick().await;
                let c = core.counts();
                if c != last {
                    tracing::debug!(
                        inodes = c.inodes,
                        listing_entries = c.listing_entries,
                        listing_bytes = c.listing_bytes,
                        "inode table"
                    );
                    last = c;
                }
            }
        })
    };
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => if fuse_thread.is_finished() { break },
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    tracing::info!("unmounting");
    keepalive.abort();
    report.abort();
    core.shutdown();
    if let Some(f) = &args.ready_file {
        let _ = std::fs::remove_file(f);
    }
    unmounter.unmount().context("unmounting")?;
    detach(&args.mountpoint);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !fuse_thread.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if fuse_thread.is_finished() {
        match fuse_thread.join() {
            // We unmounted: the kernel ending the connection (ENODEV, or
            // ECONNABORTED when the detached mount's last user closes it
            // while a request is being read) is the end of a clean stop.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
                tracing::debug!(error = %e, "FUSE connection ended after the unmount");
            }
            Ok(r) => r.context("FUSE session")?,
            Err(_) => bail!("FUSE thread panicked"),
        }
    } else {
        tracing::warn!("FUSE session still busy after unmount; exiting anyway");
    }
    let held = core.counts();
    tracing::info!(
        passthrough_opens = stats.passthrough_opens.load(Ordering::Relaxed),
        plain_opens = stats.plain_opens.load(Ordering::Relaxed),
        inodes = held.inodes,
        listing_entries = held.listing_entries,
        listing_bytes = held.listing_bytes,
        "unmounted"
    );
    Ok(())
}
