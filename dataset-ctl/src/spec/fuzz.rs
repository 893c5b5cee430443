//! Fuzzing `dataset-ctl apply -f`: hostile YAML through [`super::parse`].
//!
//! Whatever a file holds — broken syntax, aliases, odd scalars, huge
//! numbers, a value pasted a hundred times — parsing must end quickly in
//! specs or in an error that is one line an operator can read (not a
//! dump of the input). Seeds: `fuzz/corpus/dataset-yaml/`.

#[path = "../../../fuzz/mutator.rs"]
mod mutator;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use shoal_proto::v1;

/// Longest error line accepted, in characters.
const MAX_ERROR: usize = 300;

/// YAML syntax worth splicing into documents.
const DICT: &[&[u8]] = &[
    b"---\n",
    b"...\n",
    b"\n- ",
    b": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b", ",
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"!!binary ",
    b"!!str ",
    b"!Dataset ",
    b"~",
    b"null",
    b"'",
    b"\"",
    b"\\u0000",
    b"# c\n",
    b"|\n  ",
    b">-\n  ",
    b"? ",
    b"\t",
    b"%YAML 1.2\n",
    b"1e400",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"chunkSize: 64MiB\n",
    b"tierPolicy: DiskOnly\n",
    b"\xef\xbb\xbf",
];

proptest! {
    #![proptest_config(mutator::config(2000))]

    #[test]
    fn hostile_yaml_parses_or_fails_in_one_line(bytes in mutator::hostile(mutator::seeds("dataset-yaml"), DICT)) {
        let text = String::from_utf8_lossy(&bytes);
        let started = Instant::now();
        let parsed = super::parse(&text, "hostile.yaml");
        prop_assert!(started.elapsed() < Duration::from_secs(2), "parsing took {:?}", started.elapsed());
        match parsed {
            Ok(specs) => {
                prop_assert!(!specs.is_empty());
                for s in specs {
                    prop_assert!(v1::TierPolicy::try_from(s.tier_policy).is_ok());
                }
            }
            Err(e) => {
                let line = format!("{e:#}");
                prop_assert!(!line.contains('\n'), "error spans lines: {line:?}");
                let n = line.chars().count();
                prop_assert!(n <= MAX_ERROR, "{n}-character error: {line:?}");
            }
        }
    }
}

/// Seeds parse; regression seeds (`regress-*`) fail in one short line.
#[test]
fn seeds_parse() {
    for (name, seed) in mutator::seed_files("dataset-yaml") {
        let text = String::from_utf8_lossy(&seed);
        match super::parse(&text, "seed.yaml") {
            Ok(specs) => {
                assert!(!name.starts_with("regress-"), "{name} parses");
                assert!(specs
                    .iter()
                    .all(|s| !s.name.is_empty() && !s.source.is_empty()));
            }
            Err(e) => {
                let line = format!("{e:#}");
                assert!(name.starts_with("regress-"), "{name}: {line}");
                assert!(
                    !line.contains('\n') && line.chars().count() <= MAX_ERROR,
                    "{name}: {line}"
                );
            }
        }
    }
}
