//! Blocking I/O on tier backing files, run on tokio's blocking pool.
//!
//! One sparse file per file version per tier, named by the file version's
//! hex id; each chunk lives at its own offset in the file, so a file whose
//! chunks are all in one tier can be read straight from that one file (and
//! handed to the kernel with FUSE passthrough).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Writes `data` at `offset`, creating the file if needed.
pub async fn write_at(path: PathBuf, offset: u64, data: Bytes) -> std::io::Result<()> {
    blocking(move || {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        f.write_all_at(&data, offset)
    })
    .await
}

/// Reads exactly `len` bytes at `offset`.
pub async fn read_at(path: PathBuf, offset: u64, len: usize) -> std::io::Result<Bytes> {
    blocking(move || {
        use std::io::{Read, Seek};
        let mut f = std::fs::File::open(&path)?;
        f.seek(std::io::SeekFrom::Start(offset))?;
        // read_to_end fills spare capacity without zeroing it first.
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf)?;
        if buf.len() != len {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Bytes::from(buf))
    })
    .await
}

/// Frees the blocks of `[offset, offset+len)` without changing the file size.
pub fn punch_hole(path: &Path, offset: u64, len: u64) -> std::io::Result<()> {
    let f = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: fallocate on a valid, open file descriptor with in-range
    // arguments; it touches no memory of this process.
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Async wrapper of [`punch_hole`].
pub async fn punch(path: PathBuf, offset: u64, len: u64) -> std::io::Result<()> {
    blocking(move || punch_hole(&path, offset, len)).await
}

/// Whether the error means the medium is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Flushes every dirty page and inode of the filesystem holding `dir`
/// (syncfs): one call makes a whole tier durable.
pub fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir)?;
    // SAFETY: syncfs on a file descriptor we own for the whole call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Removes a backing file (off the async workers); a missing one is fine.
pub async fn remove(path: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
    .await
    .map_err(std::io::Error::other)?
}
