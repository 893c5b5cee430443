//! Capacity-weighted rendezvous hashing: which node owns a chunk.
//!
//! Every node computes the same order from the same live member list, with
//! no coordination; removing a node only moves the chunks it owned, and a
//! node with twice the capacity owns about twice the chunks.

/// Members ordered by preference for `key` (first = owner). `nodes` are
/// (name, weight) with weight > 0.
pub fn order<'a>(key: &[u8], nodes: &[(&'a str, f64)]) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = nodes
        .iter()
        .map(|(name, weight)| {
            let mut h = blake3::Hasher::new();
            h.update(key);
            h.update(b"\0");
            h.update(name.as_bytes());
            let bits =
                u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
            // Uniform in (0, 1), never 0 or 1.
            let u = ((bits >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (weight.max(f64::MIN_POSITIVE) / -u.ln(), *name)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(nodes: &[(&str, f64)], n: u32) -> Vec<String> {
        (0..n)
            .map(|i| order(&i.to_le_bytes(), nodes)[0].to_string())
            .collect()
    }

    #[test]
    fn stable_minimal_movement_and_weighted() {
        let three = [("a", 1.0), ("b", 1.0), ("c", 1.0)];
        let two = [("a", 1.0), ("c", 1.0)];
        let before = owners(&three, 3000);
        let after = owners(&two, 3000);
        for (b, a) in before.iter().zip(&after) {
            if b != "b" {
                assert_eq!(a, b, "only b's chunks may move");
            }
        }
        let share = |v: &[String], n: &str| v.iter().filter(|x| *x == n).count();
        assert!((800..1200).contains(&share(&before, "a")));
        let weighted = owners(&[("a", 2.0), ("b", 1.0)], 3000);
        let a = share(&weighted, "a");
        assert!(
            (1800..2200).contains(&a),
            "a owns {a} of 3000 with double weight"
        );
        assert_eq!(order(b"k", &three), order(b"k", &three));
    }
}
