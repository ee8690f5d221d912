#!/usr/bin/env python3
"""An independent oracle for docs/bucketing.md, written from the document, sharing no code with
flagforge: murmur3 x86_32 and the few CBOR heads are written out here.

Reads JSON lines on stdin, one query per line:
  {"algorithm": "flagd-v2" | "flagd-v3" | "flagd-v3-pair" | "unleash" | "unleash-variants",
   "seed": "...", "value": "..." | 123, "weights": [50, 50]}
and writes, per line, {"bucket": B, "total": W, "index": I} (I: the variant index chosen).
Used to compute the rollout expectations in corpus/tests and by the importer tests.
"""
import json
import struct
import sys


def murmur3_32(data: bytes, seed: int) -> int:
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & 0xFFFFFFFF
    n = len(data) // 4
    for i in range(n):
        (k,) = struct.unpack_from("<I", data, i * 4)
        k = (k * c1) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
        h = ((h << 13) | (h >> 19)) & 0xFFFFFFFF
        h = (h * 5 + 0xE6546B64) & 0xFFFFFFFF
    tail = data[n * 4:]
    k = 0
    if len(tail) >= 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if len(tail) >= 1:
        k ^= tail[0]
        k = (k * c1) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([(major << 5) | n])
    for ai, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([(major << 5) | ai]) + n.to_bytes(width, "big")
    raise ValueError("too large for CBOR")


def cbor(value) -> bytes:
    if isinstance(value, str):
        b = value.encode("utf-8")
        return cbor_head(3, len(b)) + b
    if isinstance(value, bool):
        raise ValueError("booleans do not bucket")
    if isinstance(value, int):
        return cbor_head(0, value) if value >= 0 else cbor_head(1, -1 - value)
    if isinstance(value, list):
        return cbor_head(4, len(value)) + b"".join(cbor(v) for v in value)
    raise ValueError(f"cannot encode {value!r}")


def text(value) -> str:
    return value if isinstance(value, str) else str(value)


def bucket(algorithm: str, seed: str, value, total: int) -> int:
    if algorithm == "flagd-v2":
        return (murmur3_32((seed + text(value)).encode("utf-8"), 0) * total) >> 32
    if algorithm == "flagd-v3-pair":
        return (murmur3_32(cbor([seed, text(value)]), 0) * total) >> 32
    if algorithm == "flagd-v3":
        key = value if seed == "" else seed + text(value)
        return (murmur3_32(cbor(key), 0) * total) >> 32
    if algorithm in ("unleash", "unleash-variants"):
        hash_seed = 0 if algorithm == "unleash" else 86028157
        return murmur3_32(f"{seed}:{text(value)}".encode("utf-8"), hash_seed) % total
    raise ValueError(f"unknown algorithm {algorithm}")


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        q = json.loads(line)
        total = sum(q["weights"])
        b = bucket(q["algorithm"], q["seed"], q["value"], total)
        acc, index = 0, None
        for i, w in enumerate(q["weights"]):
            acc += w
            if acc > b:
                index = i
                break
        print(json.dumps({"bucket": b, "total": total, "index": index}))


if __name__ == "__main__":
    main()
