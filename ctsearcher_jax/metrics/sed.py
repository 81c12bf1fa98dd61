"""String edit distance (SED) between scanpaths, batched and jit-compiled.

Each fixation becomes one character; SED is the plain Levenshtein distance (insert, delete,
substitute all cost 1) between the ground-truth string and the predicted string. Lower is better.

Codes:
- `legacy` (default, paper parity): the original `_scanpath_to_string` of CT-ScanGaze. Every
  value of the fixation row is truncated to int32, the grid step is `512 // n` (n = 5, step 102)
  on all three axes, and the character is
  `x // 102 + ((y // 102) * 5) // 2 + ((z // 102) * 5) // 2` (integer division after the
  multiply, bins 0..5). Many (x, y, z) cells share a character (e.g. y-bin 1 and z-bin 0 give
  the same code as y-bin 0 and z-bin 1): the code collides; kept for parity.
- `bijective`: one character per cell of the (n+1)^3 grid the truncated coordinates fall into,
  `xb + (n+1) * (yb + (n+1) * zb)` with `b = coord // step` (bins 0..n, as the legacy code
  produces for 510/511): distinct cells never share a character.

The Levenshtein DP runs over anti-diagonals (int32, exact) with masking, vmapped over pairs.
"""

from __future__ import annotations

from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ctsearcher_jax.metrics._batch import bucket, pad_batch, pad_sequences

SedCode = Literal["legacy", "bijective"]


def fixations_to_codes(fixations: np.ndarray, code: SedCode = "legacy",
                       frame: tuple[int, int, int] = (512, 512, 512), n: int = 5) -> np.ndarray:
    """Character codes of one scanpath.

    fixations: (k, 4) float64 `[x, y, z, duration]` (duration unused). frame: (height, width,
    depth) as the original reads them from the stimulus shape (all 512). Returns (k,) int64.
    """
    f = np.asarray(fixations, dtype=np.float64).reshape(-1, 4)
    ints = f[:, :3].astype(np.int32).astype(np.int64)  # truncation toward zero, like astype(int32)
    h_step, w_step, d_step = frame[0] // n, frame[1] // n, frame[2] // n
    xb = ints[:, 0] // w_step
    yb = ints[:, 1] // h_step
    zb = ints[:, 2] // d_step
    if code == "legacy":
        return xb + (yb * n) // 2 + (zb * n) // 2
    if code == "bijective":
        base = n + 1
        return xb + base * (yb + base * zb)
    raise ValueError(f"unknown SED code {code!r}; use 'legacy' or 'bijective'")


def _levenshtein_one(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array) -> jax.Array:
    """Levenshtein distance of one padded pair (a valid up to la, b up to lb): () int32."""
    rows = a.shape[0] + 1
    i = jnp.arange(rows)
    a_prev = jnp.concatenate([a[:1], a])
    big = jnp.int32(1 << 30)

    def step(carry, d):
        f1, f2, result = carry
        j = d - i
        valid = (j >= 0) & (j <= lb) & (i <= la)
        bj = b[jnp.clip(j - 1, 0, b.shape[0] - 1)]
        up = jnp.concatenate([f1[:1], f1[:-1]])     # D[i-1, j]
        diag = jnp.concatenate([f2[:1], f2[:-1]])   # D[i-1, j-1]
        inner = jnp.minimum(jnp.minimum(up + 1, f1 + 1), diag + (a_prev != bj).astype(jnp.int32))
        f = jnp.where(i == 0, j, jnp.where(j == 0, i, inner))
        f = jnp.where(valid, f, big)
        # The answer is D[la, lb], on diagonal la + lb.
        result = jnp.where(d == la + lb, f[jnp.clip(la, 0, rows - 1)], result)
        return (f, f1, result), None

    init = (jnp.full((rows,), big), jnp.full((rows,), big), jnp.int32(0))
    (_, _, result), _ = jax.lax.scan(step, init, jnp.arange(a.shape[0] + b.shape[0] + 1))
    return result


_levenshtein_batch = jax.jit(jax.vmap(_levenshtein_one))


def levenshtein_batch(seq_a: Sequence[np.ndarray], seq_b: Sequence[np.ndarray]) -> np.ndarray:
    """Levenshtein distances of many integer-sequence pairs: (B,) int64."""
    n = len(seq_a)
    if n == 0:
        return np.zeros((0,), np.int64)
    nb = pad_batch(n)
    empty = np.zeros(0, np.int32)
    ca = list(seq_a) + [empty] * (nb - n)
    cb = list(seq_b) + [empty] * (nb - n)
    a, la = pad_sequences(ca, bucket(max(len(s) for s in ca)), fill=-1, dtype=np.int32)
    b, lb = pad_sequences(cb, bucket(max(len(s) for s in cb)), fill=-2, dtype=np.int32)
    out = _levenshtein_batch(jnp.asarray(a), jnp.asarray(la), jnp.asarray(b), jnp.asarray(lb))
    return np.asarray(out, dtype=np.int64)[:n]


def sed_batch(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], code: SedCode = "legacy",
              frame: tuple[int, int, int] = (512, 512, 512), n: int = 5) -> np.ndarray:
    """SED of many (gt, pred) pairs of (k, 4) `[x, y, z, duration]` arrays: (B,) int64, lower is better."""
    if len(gt) != len(pred):
        raise ValueError(f"sed_batch: {len(gt)} ground-truth vs {len(pred)} predicted scanpaths")
    ca = [fixations_to_codes(g, code, frame, n).astype(np.int32) for g in gt]
    cb = [fixations_to_codes(p, code, frame, n).astype(np.int32) for p in pred]
    return levenshtein_batch(ca, cb)


def sed(gt: np.ndarray, pred: np.ndarray, code: SedCode = "legacy") -> int:
    """SED of one pair (see `sed_batch`)."""
    return int(sed_batch([gt], [pred], code)[0])


def score_pairs(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], *,
                sed_code: SedCode = "legacy") -> dict[str, np.ndarray]:
    """The `sed` family (metrics/registry.py): {"sed": (K,) float64 edit distances}."""
    return {"sed": sed_batch(gt, pred, sed_code).astype(np.float64)}
