//! Deterministic bucketing for weighted rollouts (flagd `fractional` v2 formula).
//!
//! `h = murmur3_x86_32(seed_utf8 ++ value_utf8, seed = 0)`, `bucket = (u64(h) * W) >> 32` with
//! `W` the sum of the weights, and the chosen variant is the first whose cumulative weight is
//! greater than `bucket`, walking variants in source order. See `docs/bucketing.md`.

use std::io::Cursor;

/// murmur3 x86_32 of `seed ++ value` with hash seed 0.
#[must_use]
pub fn hash(seed: &str, value: &str) -> u32 {
    let mut bytes = Vec::with_capacity(seed.len() + value.len());
    bytes.extend_from_slice(seed.as_bytes());
    bytes.extend_from_slice(value.as_bytes());
    // Reading from an in-memory cursor cannot fail.
    murmur3::murmur3_32(&mut Cursor::new(bytes), 0).unwrap_or(0)
}

/// The bucket in `[0, total)` for a hash.
#[must_use]
pub fn bucket(h: u32, total: u64) -> u64 {
    (u64::from(h) * total) >> 32
}

/// Picks the index into `weights` for `seed ++ value`; `None` when all weights are zero.
/// Returns `(index, bucket, total)`.
#[must_use]
pub fn pick(
    seed: &str,
    value: &str,
    weights: impl Iterator<Item = u32> + Clone,
) -> Option<(usize, u64, u64)> {
    let total: u64 = weights.clone().map(u64::from).sum();
    if total == 0 || total > u64::from(u32::MAX) {
        return None;
    }
    let b = bucket(hash(seed, value), total);
    let mut cumulative = 0u64;
    for (i, w) in weights.enumerate() {
        cumulative += u64::from(w);
        if cumulative > b {
            return Some((i, b, total));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_reference_vectors() {
        // Published murmur3_x86_32 vectors with seed 0.
        assert_eq!(hash("", ""), 0);
        assert_eq!(hash("", "hello"), 0x248b_fa47);
        assert_eq!(hash("hello", ", world"), 0x149b_bb7f);
        assert_eq!(
            hash("The quick brown fox ", "jumps over the lazy dog"),
            0x2e4f_f723
        );
    }

    #[test]
    fn zero_weights_are_never_picked() {
        for v in ["a", "b", "c", "d", "e", "f"] {
            let (i, _, _) = pick("k", v, [0u32, 5, 0].into_iter()).unwrap();
            assert_eq!(i, 1);
        }
        assert!(pick("k", "a", [0u32, 0].into_iter()).is_none());
    }

    #[test]
    fn split_is_roughly_even() {
        let mut counts = [0u32; 2];
        for i in 0..10_000 {
            let (idx, _, _) = pick("flag", &format!("user-{i}"), [50u32, 50].into_iter()).unwrap();
            counts[idx] += 1;
        }
        assert!(counts[0] > 4_700 && counts[1] > 4_700, "{counts:?}");
    }
}
