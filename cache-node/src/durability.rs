//! What an unclean stop may have lost, and when to check.
//!
//! Chunk bytes are written without fsync (a 4 MiB write per chunk; syncing
//! each would cost the disk tier most of its throughput), and chunk records
//! ride RocksDB's unsynced log. A `kill -9` loses neither: the page cache
//! survives the process. A power loss or kernel crash can: a record may
//! survive while the pages it describes did not. So the node remembers, in
//! `<data_dir>/last-run`, the boot it ran in and whether it stopped
//! cleanly (a clean stop syncs the tiers and the log first). At start,
//! recovered chunks are verified — hashed again in the background, and
//! before any read of one serves it — when the last run did not stop
//! cleanly *and* the host has rebooted since (`auto`), always, or never.
//! Records an operator would miss (datasets, pins, jobs) are written with a
//! synced log instead.
//!
//! The decision is a pure function ([`decide`]) of what the file says.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// When recovered chunks are verified at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// After an unclean stop followed by a reboot (pages may be lost).
    #[default]
    Auto,
    /// At every start.
    Always,
    /// Never (trust the tiers).
    Never,
}

/// What the previous run left in `last-run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub boot_id: String,
    pub clean: bool,
}

const FILE: &str = "last-run";

/// Why recovered chunks must be verified, or `None`.
pub fn decide(mode: VerifyMode, last: Option<&LastRun>, boot_id: &str) -> Option<&'static str> {
    match (mode, last) {
        (VerifyMode::Never, _) => None,
        (VerifyMode::Always, _) => Some("--verify-on-start always"),
        // First start, or a state from before this file existed: nothing
        // says pages were lost.
        (VerifyMode::Auto, None) => None,
        (VerifyMode::Auto, Some(l)) if l.clean => None,
        (VerifyMode::Auto, Some(l)) if !boot_id.is_empty() && l.boot_id == boot_id => None,
        (VerifyMode::Auto, Some(_)) => {
            Some("the last run did not stop cleanly and the host rebooted since")
        }
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or "" if unknown
/// (then an unclean stop always counts as a possible power loss).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Reads what the last run left and records this run as not (yet) clean.
pub fn begin(data_dir: &Path, boot_id: &str) -> std::io::Result<Option<LastRun>> {
    let last = std::fs::read(data_dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    write(data_dir, boot_id, false)?;
    Ok(last)
}

/// Records a clean stop (after the tiers and the log were synced).
pub fn end_clean(data_dir: &Path) -> std::io::Result<()> {
    write(data_dir, &boot_id(), true)
}

fn write(data_dir: &Path, boot_id: &str, clean: bool) -> std::io::Result<()> {
    use std::io::Write;
    let run = LastRun {
        boot_id: boot_id.to_string(),
        clean,
    };
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(&run).expect("serialises"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(FILE))?;
    std::fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unclean_stop_across_a_reboot_needs_verification_in_auto() {
        let run = |boot: &str, clean| LastRun {
            boot_id: boot.into(),
            clean,
        };
        let auto = VerifyMode::Auto;
        assert_eq!(decide(auto, None, "b1"), None, "first start");
        assert_eq!(
            decide(auto, Some(&run("b1", true)), "b2"),
            None,
            "clean stop"
        );
        assert_eq!(
            decide(auto, Some(&run("b1", false)), "b1"),
            None,
            "kill -9: the page cache survived"
        );
        assert!(decide(auto, Some(&run("b1", false)), "b2").is_some());
        assert!(
            decide(auto, Some(&run("", false)), "").is_some(),
            "no boot id: an unclean stop may have been a power loss"
        );
        assert!(decide(VerifyMode::Always, Some(&run("b1", true)), "b1").is_some());
        assert!(decide(VerifyMode::Never, Some(&run("b1", false)), "b2").is_none());
    }

    #[test]
    fn a_run_is_unclean_until_it_ends_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(begin(dir.path(), "b1").unwrap(), None);
        let last = begin(dir.path(), "b1").unwrap().unwrap();
        assert_eq!(
            last,
            LastRun {
                boot_id: "b1".into(),
                clean: false
            }
        );
        end_clean(dir.path()).unwrap();
        assert!(begin(dir.path(), "b1").unwrap().unwrap().clean);
    }
}
