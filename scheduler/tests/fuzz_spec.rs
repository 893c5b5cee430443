//! Fuzzing deployment specs: hostile YAML and JSON through
//! `shoal_scheduler::spec::parse`, what `scheduler apply` and the HTTP API
//! accept from users.
//!
//! Parsing must end quickly in a deployment or in one readable line (not a
//! dump of the input), and an accepted deployment must be valid and
//! survive being written back out. Seeds: `fuzz/corpus/deployment-yaml/`.

#[path = "../../fuzz/mutator.rs"]
mod mutator;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use shoal_scheduler::spec::{parse, validate};

/// Longest error line accepted, in characters.
const MAX_ERROR: usize = 300;

/// YAML and JSON syntax worth splicing into specs.
const DICT: &[&[u8]] = &[
    b"---\n",
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
    b"~",
    b"null",
    b"'",
    b"\"",
    b"\\u0000",
    b"# c\n",
    b"|\n  ",
    b"? ",
    b"\t",
    b"1e400",
    b".nan",
    b"-.inf",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"replicas: -1\n",
    b"mountPath: /data/../x\n",
    b"minWarmFraction: 2\n",
    b"kind: Job\n",
    b"\xef\xbb\xbf",
];

proptest! {
    #![proptest_config(mutator::config(2000))]

    #[test]
    fn hostile_specs_parse_or_fail_in_one_line(bytes in mutator::hostile(mutator::seeds("deployment-yaml"), DICT)) {
        let text = String::from_utf8_lossy(&bytes);
        let started = Instant::now();
        let parsed = parse(&text);
        prop_assert!(started.elapsed() < Duration::from_secs(2), "parsing took {:?}", started.elapsed());
        match parsed {
            Ok(d) => {
                prop_assert!(validate(&d).is_ok());
                let _ = (d.memory_bytes(), d.reuse_key());
                let again = serde_yaml::to_string(&d).unwrap();
                prop_assert_eq!(parse(&again), Ok(d));
            }
            Err(e) => {
                prop_assert!(!e.contains('\n'), "error spans lines: {:?}", e);
                let n = e.chars().count();
                prop_assert!(n <= MAX_ERROR, "{}-character error: {:?}", n, e);
            }
        }
    }
}

/// Seeds parse; regression seeds (`regress-*`) fail in one short line.
#[test]
fn seeds_parse() {
    for (name, seed) in mutator::seed_files("deployment-yaml") {
        match parse(&String::from_utf8_lossy(&seed)) {
            Ok(_) => assert!(!name.starts_with("regress-"), "{name} parses"),
            Err(e) => {
                assert!(name.starts_with("regress-"), "{name}: {e}");
                assert!(
                    !e.contains('\n') && e.chars().count() <= MAX_ERROR,
                    "{name}: {e}"
                );
            }
        }
    }
}
