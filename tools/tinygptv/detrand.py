"""A counter-based random generator the C tests can reproduce bit for bit, so that full-width
weights (hundreds of MB) need not be stored: only the seed and the rules below.

Algorithm (all arithmetic on unsigned 64-bit integers, wrapping mod 2^64):

    GOLDEN = 0x9E3779B97F4A7C15
    z = seed + ((tensor_id << 40) + i + 1) * GOLDEN        # i = row-major element index, 0-based
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9                # splitmix64 finaliser
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    z =  z ^ (z >> 31)
    k = z >> 40                                             # top 24 bits, 0 .. 2^24-1
    v = (float)(k - 2^23) * 2^(e - 23)                      # exact in float32: uniform in [-2^e, 2^e)

A tensor is described by (tensor_id, exponent e, offset): element i is v + offset, where the
addition (only when offset != 0) is ONE float32 addition with round-to-nearest-even, e.g.
`1.0f + v` in C. No other rounding happens anywhere, so C and numpy agree exactly.
"""
import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def uniform(seed: int, tensor_id: int, n: int, exponent: int, offset: float = 0.0) -> np.ndarray:
    """n float32 values of tensor `tensor_id` (see the module comment)."""
    out = np.empty(n, dtype=np.float32)
    chunk = 1 << 22
    base = np.uint64((tensor_id << 40) + 1)
    s = np.uint64(seed)
    with np.errstate(over="ignore"):
        for start in range(0, n, chunk):
            i = np.arange(start, min(n, start + chunk), dtype=np.uint64)
            z = s + (base + i) * GOLDEN
            z = (z ^ (z >> np.uint64(30))) * M1
            z = (z ^ (z >> np.uint64(27))) * M2
            z = z ^ (z >> np.uint64(31))
            k = (z >> np.uint64(40)).astype(np.int64) - (1 << 23)
            v = k.astype(np.float32) * np.float32(2.0 ** (exponent - 23))
            if offset != 0.0:
                v = v + np.float32(offset)       # one float32 add, RNE
            out[start:start + len(v)] = v
    return out


def tensor(seed: int, tensor_id: int, shape, exponent: int, offset: float = 0.0) -> np.ndarray:
    n = int(np.prod(shape))
    return uniform(seed, tensor_id, n, exponent, offset).reshape(shape)


if __name__ == "__main__":
    # known-answer values for a C unit test of the generator
    print(uniform(1234, 0, 4, 0).tolist(), uniform(1234, 7, 2, -5, 1.0).tolist())
