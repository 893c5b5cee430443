//! A wrapper that counts requests and injects faults into any origin.
//!
//! Used by tests in addition to the real S3 server and local directories:
//! it makes failure schedules (fail the next N reads, delay reads, corrupt
//! bytes) deterministic, which a real server cannot.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, Origin, OriginError, SharedOrigin};

/// Wraps an origin with counters and a fault schedule.
#[derive(Debug)]
pub struct FailureOrigin {
    inner: SharedOrigin,
    reads: AtomicU64,
    fail_next_reads: AtomicU64,
    flip_next_reads: AtomicU64,
    delay_ms: AtomicU64,
}

impl FailureOrigin {
    pub fn new(inner: SharedOrigin) -> Self {
        Self {
            inner,
            reads: AtomicU64::new(0),
            fail_next_reads: AtomicU64::new(0),
            flip_next_reads: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
        }
    }

    /// Range reads that reached this origin (including failed ones).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// The next `n` range reads fail with [`OriginError::Unavailable`].
    pub fn fail_next_reads(&self, n: u64) {
        self.fail_next_reads.store(n, Ordering::SeqCst);
    }

    /// The next `n` range reads return bytes with the first byte flipped.
    pub fn corrupt_next_reads(&self, n: u64) {
        self.flip_next_reads.store(n, Ordering::SeqCst);
    }

    /// Every read waits this long before reaching the inner origin.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn take(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[async_trait]
impl Origin for FailureOrigin {
    async fn list(&self) -> Result<Vec<ObjectMeta>, OriginError> {
        self.inner.list().await
    }

    async fn read_range(
        &self,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> Result<Bytes, OriginError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if Self::take(&self.fail_next_reads) {
            return Err(OriginError::Unavailable("injected failure".into()));
        }
        let bytes = self.inner.read_range(object, range).await?;
        if Self::take(&self.flip_next_reads) && !bytes.is_empty() {
            let mut v = bytes.to_vec();
            v[0] ^= 0xff;
            return Ok(Bytes::from(v));
        }
        Ok(bytes)
    }

    fn describe(&self) -> String {
        format!("failure-injecting {}", self.inner.describe())
    }
}
