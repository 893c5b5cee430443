//! Fuzzing the frame decoder with hostile byte streams, and measuring what
//! it allocates.
//!
//! Every connection of a node (clients on the API, peers on the mesh) starts
//! in `read_frame`, so whatever a stream holds — truncated headers, lengths
//! past the limit, lengths that announce more than ever arrives, garbage
//! protobuf — must come back as `Ok(Some)`, `Ok(None)` or `Err`, and must
//! not cost memory the sender did not pay for in bytes. The seeds are the
//! client and peer frame streams in `fuzz/corpus/{requests,peer-requests,peer-responses}/`,
//! plus the regression streams in `fuzz/corpus/frames-regress/`.
//!
//! Allocation is measured by a counting global allocator that keeps
//! per-thread totals (the test harness runs tests on several threads),
//! and each decode runs on a current-thread runtime, so every allocation
//! of a decode is counted on the thread that measures it.

#[path = "../../fuzz/mutator.rs"]
mod mutator;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll};

use proptest::prelude::*;
use prost::Message;
use shoal_proto::frame::READ_STEP;
use shoal_proto::{read_frame, read_frame_limited, v1, FrameError, MAX_FRAME_BYTES};
use tokio::io::{AsyncRead, ReadBuf};

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(n: usize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get().saturating_add(n);
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn shrank(n: usize) {
    // Memory allocated on another thread may be freed on this one.
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// wrapper only counts sizes in const-initialised thread-locals, which
// never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as the new size (large blocks are remapped, not
            // copied, so old and new do not coexist).
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `fut` on a current-thread runtime and returns its output and the
/// most memory it held at once beyond what was live when it started.
fn peak_during<T>(fut: impl std::future::Future<Output = T>) -> (T, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = rt.block_on(fut);
    let peak = PEAK.with(Cell::get) - start;
    (out, peak)
}

/// Memory a decode may use besides the frame buffer (runtime, error values).
const SLACK: usize = 64 << 10;

/// An in-memory stream that hands out at most `step` bytes per read, as a
/// socket delivers a frame in pieces, and remembers how much was taken.
struct Trickle {
    data: Cursor<Vec<u8>>,
    step: usize,
}

impl Trickle {
    fn new(data: Vec<u8>, step: usize) -> Self {
        Self {
            data: Cursor::new(data),
            step: step.max(1),
        }
    }

    fn consumed(&self) -> usize {
        self.data.position() as usize
    }

    fn at_end(&self) -> bool {
        self.consumed() == self.data.get_ref().len()
    }
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let pos = self.consumed();
        let all = self.data.get_ref();
        let n = (all.len() - pos).min(self.step).min(buf.remaining());
        buf.put_slice(&all[pos..pos + n]);
        self.data.set_position((pos + n) as u64);
        Poll::Ready(Ok(()))
    }
}

fn header(len: u32) -> Vec<u8> {
    len.to_be_bytes().to_vec()
}

fn frame_streams() -> BoxedStrategy<Vec<u8>> {
    let mut seeds = mutator::seeds("requests");
    seeds.extend(mutator::seeds("peer-requests"));
    seeds.extend(mutator::seeds("peer-responses"));
    // Streams that once failed a property (not valid streams themselves).
    seeds.extend(mutator::seeds("frames-regress"));
    mutator::hostile(seeds, &[])
}

/// Reads frames of `M` until the stream ends or fails, checking each
/// outcome against what the stream held.
async fn drain<M>(stream: &mut Trickle, limit: u32) -> Result<(), TestCaseError>
where
    M: Message + Default + PartialEq + prost::Name,
{
    // Every frame takes at least its 4-byte header, so this ends.
    loop {
        let before = stream.consumed();
        let declared = {
            let rest = &stream.data.get_ref()[before..];
            (rest.len() >= 4).then(|| u32::from_be_bytes(rest[..4].try_into().unwrap()))
        };
        match read_frame_limited::<M, _>(stream, limit).await {
            Ok(Some(m)) => {
                let len = declared.expect("a frame has a header") as usize;
                prop_assert_eq!(stream.consumed(), before + 4 + len);
                // What was accepted encodes and decodes back to itself.
                let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded frame");
                prop_assert!(again == m, "message changed after a round trip");
            }
            Ok(None) => {
                prop_assert_eq!(before, stream.consumed());
                prop_assert!(
                    stream.at_end(),
                    "Ok(None) with bytes left: a truncated header"
                );
                return Ok(());
            }
            Err(FrameError::TooLarge(n)) => {
                prop_assert_eq!(Some(n), declared);
                prop_assert!(n > limit.min(MAX_FRAME_BYTES));
                prop_assert_eq!(stream.consumed(), before + 4, "the body was read");
                return Ok(());
            }
            Err(FrameError::Io(e)) => {
                prop_assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
                prop_assert!(stream.at_end());
                return Ok(());
            }
            Err(FrameError::Decode(_)) => {
                let len = declared.expect("a frame has a header") as usize;
                prop_assert_eq!(stream.consumed(), before + 4 + len);
                return Ok(());
            }
            Err(FrameError::TooComplex {
                len,
                estimate,
                limit,
            }) => {
                prop_assert_eq!(Some(len as u32), declared);
                prop_assert_eq!(stream.consumed(), before + 4 + len);
                prop_assert!(estimate > limit);
                return Ok(());
            }
        }
    }
}

proptest! {
    #![proptest_config(mutator::config(3000))]

    /// Any stream decodes as clients' and peers' messages to a clean
    /// outcome: whole frames, a clean end, or one error that names it.
    #[test]
    fn hostile_streams_decode_to_an_outcome(data in frame_streams(), step in 1usize..64, limited in any::<bool>()) {
        let limit = if limited { 64 << 10 } else { MAX_FRAME_BYTES };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            drain::<v1::Request>(&mut Trickle::new(data.clone(), step), limit).await?;
            drain::<v1::PeerRequest>(&mut Trickle::new(data.clone(), step), limit).await?;
            drain::<v1::PeerResponse>(&mut Trickle::new(data.clone(), step), limit).await
        })?;
    }

    /// A frame costs at most the bytes that arrived plus one read step,
    /// whatever length its header announces. (`ChunkData` decodes its
    /// bytes as slices of the frame, so the frame buffer is all there is.)
    #[test]
    fn a_frame_costs_what_arrived(data in frame_streams(), step in 1usize..4096) {
        let supplied = data.len();
        let mut stream = Trickle::new(data, step);
        let (_, peak) = peak_during(read_frame::<v1::ChunkData, _>(&mut stream));
        prop_assert!(peak <= supplied + READ_STEP + SLACK, "peak {peak} for {supplied} bytes");
    }
}

/// A header announcing a large frame followed by few bytes (or none)
/// costs at most one read step, and a longer trickle grows the buffer with
/// the bytes that arrive, never to the announced length up front.
#[test]
fn announced_lengths_are_not_allocated_up_front() {
    for declared in [65 << 10, 16 << 20, MAX_FRAME_BYTES] {
        for supplied in [0usize, 10, 1 << 20, 5 << 20, 9 << 20] {
            let supplied = supplied.min(declared as usize - 1);
            let mut data = header(declared);
            data.resize(4 + supplied, 0x5a);
            let mut stream = Trickle::new(data, 1 << 16);
            let (got, peak) = peak_during(read_frame::<v1::ChunkData, _>(&mut stream));
            assert!(
                matches!(got, Err(FrameError::Io(ref e)) if e.kind() == std::io::ErrorKind::UnexpectedEof),
                "{got:?}"
            );
            assert!(
                peak <= supplied + READ_STEP + SLACK,
                "announced {declared}, sent {supplied}: peak {peak}"
            );
        }
    }
}

/// A whole large frame ends in a buffer of its own size, not a larger one
/// the decoded bytes would keep alive.
#[test]
fn a_large_frame_costs_its_size() {
    let len = 9 << 20;
    let msg = v1::ChunkData {
        data: vec![7u8; len].into(),
        hash: vec![1u8; 32].into(),
    };
    let data = shoal_proto::encode_frame(&msg).unwrap().to_vec();
    let supplied = data.len();
    let mut stream = Trickle::new(data, 1 << 16);
    let (got, peak) = peak_during(read_frame::<v1::ChunkData, _>(&mut stream));
    assert_eq!(got.unwrap().unwrap(), msg);
    assert!(
        peak <= supplied + READ_STEP + SLACK,
        "peak {peak} for {supplied} bytes"
    );
}

/// The limit for unauthenticated connections refuses a larger frame from
/// its header alone: nothing of the body is read or allocated.
#[test]
fn the_limit_is_checked_before_the_body() {
    let limit = 64 << 10;
    for declared in [
        limit + 1,
        1 << 20,
        MAX_FRAME_BYTES,
        MAX_FRAME_BYTES + 1,
        u32::MAX,
    ] {
        let mut data = header(declared);
        data.resize(4 + (128 << 10), 0);
        let mut stream = Trickle::new(data, 1 << 20);
        let (got, peak) = peak_during(read_frame_limited::<v1::Request, _>(&mut stream, limit));
        assert!(
            matches!(got, Err(FrameError::TooLarge(n)) if n == declared),
            "{got:?}"
        );
        assert_eq!(stream.consumed(), 4, "declared {declared}");
        assert!(peak <= SLACK, "declared {declared}: peak {peak}");
    }
    // At the limit the frame is read.
    let req = v1::Request::new(v1::request::Kind::List(v1::ListDatasets {}));
    let data = shoal_proto::encode_frame(&req).unwrap().to_vec();
    let body_len = data.len() - 4;
    let mut stream = Trickle::new(data, 3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got = rt.block_on(read_frame_limited::<v1::Request, _>(
        &mut stream,
        body_len as u32,
    ));
    assert_eq!(got.unwrap(), Some(req));
}

/// A stream that ends inside a frame header is an error, not a clean end:
/// only a stream that ends between frames is.
#[test]
fn a_truncated_header_is_an_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for n in 1..4 {
        let mut stream = Trickle::new(vec![0; n], 1);
        let got = rt.block_on(read_frame::<v1::Request, _>(&mut stream));
        assert!(
            matches!(got, Err(FrameError::Io(ref e)) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{n} bytes: {got:?}"
        );
    }
    let mut empty = Trickle::new(Vec::new(), 1);
    assert!(rt
        .block_on(read_frame::<v1::Request, _>(&mut empty))
        .unwrap()
        .is_none());
}

/// Every seed is a valid stream of whole frames of its kind: mutations
/// start from inputs that reach the message decoders, not from noise.
#[test]
fn seeds_are_valid_frame_streams() {
    fn count<M: Message + Default + prost::Name>(target: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (i, seed) in mutator::seeds(target).into_iter().enumerate() {
            let mut stream = Trickle::new(seed, 1 << 20);
            let mut frames = 0;
            while rt
                .block_on(read_frame::<M, _>(&mut stream))
                .unwrap_or_else(|e| panic!("{target} seed {i}: {e}"))
                .is_some()
            {
                frames += 1;
            }
            assert!(frames > 0, "{target} seed {i} holds no frame");
        }
    }
    count::<v1::Request>("requests");
    count::<v1::PeerRequest>("peer-requests");
    count::<v1::PeerResponse>("peer-responses");
}
