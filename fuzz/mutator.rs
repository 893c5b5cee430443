//! The seed-corpus mutator every Shoal fuzz target shares.
//!
//! Shoal fuzzes with proptest rather than cargo-fuzz (which needs a nightly
//! toolchain), so the targets run in every `cargo test` and in CI. Purely
//! random bytes rarely get past a decoder's first check, so most inputs
//! start from a valid seed in `fuzz/corpus/<target>/` and apply a few
//! byte-level mutations (bit flips, boundary bytes, inserted or removed
//! ranges, huge varints and length prefixes, splices of other seeds, and
//! tokens of a per-target dictionary). A failing case shrinks to fewer and
//! smaller mutations, i.e. to a small diff from a valid input, which is
//! what gets added back to the corpus as a regression seed.
//!
//! Every crate's fuzz tests include this file with `#[path]`, so there is
//! one mutator and one corpus layout. See `fuzz/README.md`.

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

/// Multi-byte values that sit on the edges decoders check: the largest
/// varints, length prefixes at and above the frame limit, and zero.
const INTERESTING: &[&[u8]] = &[
    // varint u64::MAX
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    // varint 2^32 (past u32 fields)
    &[0x80, 0x80, 0x80, 0x80, 0x10],
    // varint u32::MAX
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    // an unterminated varint
    &[
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ],
    // big-endian frame lengths: u32::MAX, 80 MiB + 1, 80 MiB, 64 KiB + 1
    &[0xff, 0xff, 0xff, 0xff],
    &[0x05, 0x00, 0x00, 0x01],
    &[0x05, 0x00, 0x00, 0x00],
    &[0x00, 0x01, 0x00, 0x01],
    &[0x00, 0x00, 0x00, 0x00],
];

/// Single bytes worth trying anywhere.
const BOUNDARY_BYTES: &[u8] = &[0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];

/// One edit of an input. Positions are fractions of the current length
/// ([`Index`]), so a mutation stays meaningful as earlier ones resize it.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, Index),
    Insert(Index, Vec<u8>),
    Overwrite(Index, Index),
    Token(Index, Index),
    Delete(Index, usize),
    Truncate(Index),
    Duplicate(Index, usize, usize),
    Splice(Index, Index, Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<Index>;
    prop_oneof![
        (at(), 0u8..8).prop_map(|(a, b)| Mutation::FlipBit(a, b)),
        (at(), at()).prop_map(|(a, v)| Mutation::SetByte(a, v)),
        (at(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (at(), at()).prop_map(|(a, v)| Mutation::Overwrite(a, v)),
        (at(), at()).prop_map(|(a, t)| Mutation::Token(a, t)),
        (at(), 1usize..64).prop_map(|(a, n)| Mutation::Delete(a, n)),
        at().prop_map(Mutation::Truncate),
        (at(), 1usize..64, 1usize..16).prop_map(|(a, n, k)| Mutation::Duplicate(a, n, k)),
        (at(), at(), at(), 1usize..256).prop_map(|(a, s, f, n)| Mutation::Splice(a, s, f, n)),
    ]
}

/// 1–8 mutations, half the time only one or two: a structured input
/// (protobuf, YAML) rarely survives many, and inputs that still decode
/// are the ones that reach the code behind the decoder.
fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop_oneof![
        prop::collection::vec(mutation(), 1..=2),
        prop::collection::vec(mutation(), 1..=8),
    ]
}

/// `at` as a position in `0..=len` (an insertion point).
fn point(at: &Index, len: usize) -> usize {
    at.index(len + 1)
}

impl Mutation {
    fn apply(&self, data: &mut Vec<u8>, seeds: &[Vec<u8>], dict: &[&[u8]]) {
        let len = data.len();
        match self {
            Mutation::FlipBit(at, bit) if len > 0 => data[at.index(len)] ^= 1 << bit,
            Mutation::SetByte(at, v) if len > 0 => {
                data[at.index(len)] = *v.get(BOUNDARY_BYTES);
            }
            Mutation::Insert(at, bytes) => {
                let p = point(at, len);
                data.splice(p..p, bytes.iter().copied());
            }
            Mutation::Overwrite(at, v) => {
                let value = v.get(INTERESTING);
                let p = point(at, len);
                let end = (p + value.len()).min(len);
                data.splice(p..end, value.iter().copied());
            }
            Mutation::Token(at, t) if !dict.is_empty() => {
                let p = point(at, len);
                data.splice(p..p, t.get(dict).iter().copied());
            }
            Mutation::Delete(at, n) if len > 0 => {
                let p = at.index(len);
                data.drain(p..(p + n).min(len));
            }
            Mutation::Truncate(at) => data.truncate(point(at, len)),
            Mutation::Duplicate(at, n, times) if len > 0 => {
                let p = at.index(len);
                let piece = data[p..(p + n).min(len)].to_vec();
                for _ in 0..*times {
                    data.splice(p..p, piece.iter().copied());
                }
            }
            Mutation::Splice(at, seed, from, n) => {
                let other = seed.get(seeds);
                if !other.is_empty() {
                    let f = from.index(other.len());
                    let p = point(at, len);
                    data.splice(p..p, other[f..(f + n).min(other.len())].iter().copied());
                }
            }
            _ => {}
        }
    }
}

/// Every seed of `target`: the files under `fuzz/corpus/<target>/`, in
/// name order. Panics when there are none (a target without seeds would
/// only ever see noise).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    seed_files(target)
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect()
}

/// [`seeds`] with their file names. Seeds named `regress-*` reproduce a
/// failure once found; they need not be valid input.
pub fn seed_files(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(p).expect("corpus file"))
        })
        .collect()
}

/// `fuzz/corpus/<target>/` of this repository.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Hostile inputs for a target: mostly a seed with 1–8 mutations
/// ([`mutations`]; tokens from `dict` among them), sometimes a seed as is
/// (the valid path must stay covered), sometimes random bytes.
pub fn hostile(seeds: Vec<Vec<u8>>, dict: &'static [&'static [u8]]) -> BoxedStrategy<Vec<u8>> {
    let seeds = Arc::new(seeds);
    let pick = seeds.clone();
    let unchanged = seeds.clone();
    prop_oneof![
        8 => (any::<Index>(), mutations()).prop_map(move |(s, muts)| {
            let mut data = s.get(&pick).clone();
            for m in &muts {
                m.apply(&mut data, &pick, dict);
            }
            data
        }),
        1 => any::<Index>().prop_map(move |s| s.get(&unchanged).clone()),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
    .boxed()
}

/// A proptest configuration running `default_cases` cases, or
/// `PROPTEST_CASES` for a long campaign. Failures are not persisted to
/// `proptest-regressions/`: a minimised failure belongs in the corpus.
pub fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
