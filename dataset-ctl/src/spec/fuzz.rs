//! Fuzzing `dataset-ctl apply -f`: hostile YAML through [`super::parse`].
//!
//! Whatever a file holds — broken syntax, aliases, odd scalars, huge
//! numbers, a value pasted a hundred times — parsing must end quickly in
//! specs or in an error that is one line an operator can read (not a
//! dump of the input). Seeds: `fuzz/corpus/dataset-yaml/`.

#[path = "../../../fuzz/mutator.rs"]
mod mutator;
#[path = "../../../fuzz/yaml.rs"]
mod yaml;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use shoal_proto::v1;

/// This target's fields and values, beside the shared YAML syntax.
const FIELDS: &[&[u8]] = &[
    b"!Dataset ",
    b"chunkSize: 64MiB\n",
    b"tierPolicy: DiskOnly\n",
];

proptest! {
    #![proptest_config(mutator::config(2000))]

    #[test]
    fn hostile_yaml_parses_or_fails_in_one_line(bytes in mutator::hostile(mutator::seeds("dataset-yaml"), yaml::dict(FIELDS))) {
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
                let checked = yaml::one_short_line(&format!("{e:#}"));
                prop_assert!(checked.is_ok(), "{}", checked.unwrap_err());
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
                if let Err(why) = yaml::one_short_line(&line) {
                    panic!("{name}: {why}");
                }
            }
        }
    }
}
