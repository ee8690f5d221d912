//! Deterministic bucketing for weighted rollouts: flagd `fractional` v2 (the default), flagd
//! v3 and Unleash. Which bytes are hashed and how a hash becomes a bucket is specified byte by
//! byte in `docs/bucketing.md`; the chosen variant is always the first whose cumulative weight
//! is greater than the bucket, walking variants in source order.

use std::io::Cursor;

use flagforge_model::ir::Bucketing;

/// Unleash's murmur3 seed for variant selection.
pub const UNLEASH_VARIANT_SEED: u32 = 86_028_157;

/// A bucketing value: a string, or an integer.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    /// A string attribute.
    Str(&'a str),
    /// An integer attribute.
    Int(i64),
}

/// murmur3 x86_32 of `bytes` with hash seed `seed`.
#[must_use]
pub fn murmur3(bytes: &[u8], seed: u32) -> u32 {
    // Reading from an in-memory cursor cannot fail.
    murmur3::murmur3_32(&mut Cursor::new(bytes), seed).unwrap_or(0)
}

/// murmur3 x86_32 of `seed ++ value` with hash seed 0 (flagd v2).
#[must_use]
pub fn hash(seed: &str, value: &str) -> u32 {
    murmur3(&joined(seed, "", Key::Str(value)), 0)
}

/// `seed ++ separator ++ value`, an integer value as its base-10 text: what flagd v2 and
/// Unleash hash.
fn joined(seed: &str, separator: &str, key: Key<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(seed.len() + separator.len() + 20);
    out.extend_from_slice(seed.as_bytes());
    out.extend_from_slice(separator.as_bytes());
    match key {
        Key::Str(s) => out.extend_from_slice(s.as_bytes()),
        Key::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
    }
    out
}

/// The flagd bucket in `[0, total)` for a hash.
#[must_use]
pub fn bucket(h: u32, total: u64) -> u64 {
    (u64::from(h) * total) >> 32
}

/// Writes a CBOR head (RFC 8949 §3) in its preferred (shortest) form.
fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    // Each arm's value fits the width it is cast to.
    #[allow(clippy::cast_possible_truncation)]
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn cbor_text(out: &mut Vec<u8>, parts: &[&str]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    cbor_head(out, 3, len as u64);
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
}

fn cbor_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        cbor_head(out, 0, n.unsigned_abs());
    } else {
        // -1 - n, computed without overflow for i64::MIN.
        cbor_head(out, 1, (n + 1).unsigned_abs());
    }
}

/// The bytes flagd v3 hashes: the deterministic CBOR encoding of the key.
#[must_use]
pub fn flagd_v3_bytes(seed: &str, key: Key<'_>, pair: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(seed.len() + 24);
    let text;
    let value = match key {
        Key::Str(s) => s,
        Key::Int(n) if pair || !seed.is_empty() => {
            text = n.to_string();
            &text
        }
        Key::Int(n) => {
            cbor_int(&mut out, n);
            return out;
        }
    };
    if pair {
        cbor_head(&mut out, 4, 2);
        cbor_text(&mut out, &[seed]);
        cbor_text(&mut out, &[value]);
    } else {
        cbor_text(&mut out, &[seed, value]);
    }
    out
}

/// The bucket in `[0, total)` for `key` under `algorithm`; `total` must be above 0.
#[must_use]
pub fn bucket_of(algorithm: Bucketing, seed: &str, key: Key<'_>, total: u64) -> u64 {
    match algorithm {
        Bucketing::FlagdV2 => bucket(murmur3(&joined(seed, "", key), 0), total),
        Bucketing::FlagdV3 { pair } => bucket(murmur3(&flagd_v3_bytes(seed, key, pair), 0), total),
        Bucketing::Unleash { hash_seed } => {
            u64::from(murmur3(&joined(seed, ":", key), hash_seed)) % total
        }
    }
}

/// Picks the index into `weights` for `key`; `None` when all weights are zero.
/// Returns `(index, bucket, total)`.
#[must_use]
pub fn pick(
    algorithm: Bucketing,
    seed: &str,
    key: Key<'_>,
    weights: impl Iterator<Item = u32> + Clone,
) -> Option<(usize, u64, u64)> {
    let total: u64 = weights.clone().map(u64::from).sum();
    if total == 0 || total > u64::from(u32::MAX) {
        return None;
    }
    let b = bucket_of(algorithm, seed, key, total);
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

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn cbor_matches_rfc_8949_appendix_a() {
        let int = |n: i64| hex(&flagd_v3_bytes("", Key::Int(n), false));
        for (n, want) in [
            (0, "00"),
            (23, "17"),
            (24, "1818"),
            (100, "1864"),
            (1000, "1903e8"),
            (1_000_000, "1a000f4240"),
            (1_000_000_000_000, "1b000000e8d4a51000"),
            (-1, "20"),
            (-10, "29"),
            (-100, "3863"),
            (-1000, "3903e7"),
            (i64::MIN, "3b7fffffffffffffff"),
        ] {
            assert_eq!(int(n), want, "{n}");
        }
        assert_eq!(hex(&flagd_v3_bytes("", Key::Str(""), false)), "60");
        assert_eq!(
            hex(&flagd_v3_bytes("", Key::Str("IETF"), false)),
            "6449455446"
        );
        assert_eq!(
            hex(&flagd_v3_bytes("I", Key::Str("ETF"), false)),
            "6449455446"
        );
        // ["a", "b"]
        assert_eq!(hex(&flagd_v3_bytes("a", Key::Str("b"), true)), "8261616162");
        // A 24-byte string needs the one-byte length form.
        let long = "x".repeat(24);
        assert!(hex(&flagd_v3_bytes("", Key::Str(&long), false)).starts_with("7818"));
    }

    #[test]
    fn unleash_normalised_hash_vectors() {
        // Unleash's normalizedHash(id, groupId, 100) = murmur3("groupId:id", 0) % 100 + 1;
        // the values below are the ones Unleash's SDKs test against.
        let norm = |id: &str, group: &str| {
            bucket_of(
                Bucketing::Unleash { hash_seed: 0 },
                group,
                Key::Str(id),
                100,
            ) + 1
        };
        assert_eq!(norm("123", "gr1"), 73);
        assert_eq!(norm("999", "groupX"), 25);
    }

    #[test]
    fn zero_weights_are_never_picked() {
        for v in ["a", "b", "c", "d", "e", "f"] {
            let (i, _, _) = pick(
                Bucketing::FlagdV2,
                "k",
                Key::Str(v),
                [0u32, 5, 0].into_iter(),
            )
            .unwrap();
            assert_eq!(i, 1);
        }
        assert!(pick(
            Bucketing::FlagdV2,
            "k",
            Key::Str("a"),
            [0u32, 0].into_iter()
        )
        .is_none());
    }

    #[test]
    fn split_is_roughly_even() {
        let mut counts = [0u32; 2];
        for i in 0..10_000 {
            let (idx, _, _) = pick(
                Bucketing::FlagdV2,
                "flag",
                Key::Str(&format!("user-{i}")),
                [50u32, 50].into_iter(),
            )
            .unwrap();
            counts[idx] += 1;
        }
        assert!(counts[0] > 4_700 && counts[1] > 4_700, "{counts:?}");
    }
}
