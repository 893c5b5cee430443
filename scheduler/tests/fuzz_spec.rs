//! Fuzzing deployment specs: hostile YAML and JSON through
//! `shoal_scheduler::spec::parse`, what `scheduler apply` and the HTTP API
//! accept from users.
//!
//! Parsing must end quickly in a deployment or in one readable line (not a
//! dump of the input), and an accepted deployment must be valid and
//! survive being written back out. Seeds: `fuzz/corpus/deployment-yaml/`.

#[path = "../../fuzz/mutator.rs"]
mod mutator;
#[path = "../../fuzz/yaml.rs"]
mod yaml;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use shoal_scheduler::spec::{parse, validate};

/// This target's fields and values, beside the shared YAML syntax.
const FIELDS: &[&[u8]] = &[
    b"replicas: -1\n",
    b"mountPath: /data/../x\n",
    b"minWarmFraction: 2\n",
    b"kind: Job\n",
];

proptest! {
    #![proptest_config(mutator::config(2000))]

    #[test]
    fn hostile_specs_parse_or_fail_in_one_line(bytes in mutator::hostile(mutator::seeds("deployment-yaml"), yaml::dict(FIELDS))) {
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
                let checked = yaml::one_short_line(&e);
                prop_assert!(checked.is_ok(), "{}", checked.unwrap_err());
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
                if let Err(why) = yaml::one_short_line(&e) {
                    panic!("{name}: {why}");
                }
            }
        }
    }
}
