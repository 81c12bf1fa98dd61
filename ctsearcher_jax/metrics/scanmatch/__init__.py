"""ScanMatch in 3D (Cristino et al. 2010), batched and jit-compiled, equal to the original's numbers.

Pipeline for one pair (as `src/utils/evaltools/scanmatch3d.py` of CT-ScanGaze computes it):

1. **Symbols** (host, NumPy float64). Each fixation `[x, y, z, t_seconds]` becomes `[x, y, z, ms]`
   with `ms = t_seconds * 1000` (a float64 product), the offset is subtracted from x, y, z,
   every negative value (all four columns) is set to 0, x/y/z >= resolution are clamped to
   `res - 1`, then every column is truncated to an integer (Python `int()`). The bin of an axis
   is `int32(arange(0, bins, bins/res))[coord]`, arithmetic on a 1-D table (no `res^3` array);
   the symbol is `yb * (Xbin*Zbin) + xb * Zbin + zb`.
   With a temporal bin (`temp_bin` ms, 25 in the paper) each symbol is repeated
   `np.round(int(ms) / temp_bin)` times (round half to even; 0 repeats drop the fixation).
2. **Needleman-Wunsch** (jnp, float64). Substitution `S = |D - max D| - (max D - threshold)` with
   `D` the Euclidean distance between bins in (y, x, z) bin units (i.e. `threshold - D`), gap
   value 0 by default, borders `F[i, 0] = gap * (i + 1)`, `F[0, j] = gap * (j + 1)`,
   `F[i, j] = max(F[i-1, j-1] + S[a_i, b_j], F[i-1, j] + gap, F[i, j-1] + gap)`.
3. **Score** = `max(F) / (max(S) * max(len_a, len_b))`.

Original quirks kept: two empty symbol sequences (every fixation shorter than half a temporal
bin) give `0 / 0 = NaN`, as the original does; one empty sequence gives 0.

Modules, one job each:

    symbols.py    parameters, substitution matrix, fixations -> symbol sequences (host)
    kernel.py     choose_kernel: THE choice of kernel and of where it runs (rule below)
    alignment.py  gap0_alignment: the gap-0 alignment of a batch of padded pairs, the one entry
                  point of the metric and the reward; runs the chosen kernel
    stripe.py     the jnp stripe kernel (any device, inside any jit)
    native.py     the native C++ kernel inside jit (XLA FFI, CPU devices; scanmatch_gap0.cc)
    masked.py     the masked whole-matrix jnp kernel, the only one for gap != 0
    metric.py     the evaluation metric: scanmatch_batch, score_pairs (the registry's scorer)
    reward.py     the fine-tuning reward inside the jitted step: scanmatch_pairs, hmean_reward

Kernels. With gap 0 (the paper's setting) F is monotone, so max(F) = F[la, lb], and two kernels
compute it, bit-identical to the written-out DP in float64: the native C++ kernel (rows swept
over the other sequence's runs of repeated symbols, host threads over pairs; CPU devices only,
compiled on first use by `runtime/native.py`) and the jnp stripe kernel (stripes of rows swept
by anti-diagonals; runs anywhere). Other gaps use the masked kernel. `kernel.choose_kernel` is the
one function that picks, from where the computation runs, never from `jax.default_backend()`
alone:

- gap != 0: the masked kernel.
- The evaluation (the metric; host arrays, placed by the metric): the native kernel on this
  process's own CPU device, on GPU/TPU machines too (these DPs are sequential and the host's
  cores beat the card), when the process has a CPU backend and the library builds; otherwise
  the stripe kernel on the default device (one warning names why). kernel="stripe" keeps the
  DP on the default device (the card).
- Inside a compiled step (the reward; `devices` = the step's shardings or mesh, which
  `train/finetune.py` passes): the native kernel only when the step runs on one CPU device and
  the library builds; the stripe kernel on accelerators and on several devices (a custom call
  would gather a sharded batch onto every device). Without `devices`: the default backend's
  devices, so one CPU device means a process with exactly one device, a CPU.

A pair's score never depends on the kernel, the other pairs, the chunking or the threads.
With durations a 250-fixation pair is a ~3000 x 3000 DP (a 0.3 s fixation is 12 symbols), the
dominant cost of an evaluation; timings in docs/benchmarks.md (`scripts/bench_metrics.py`).
"""

from ctsearcher_jax.metrics.scanmatch.alignment import gap0_alignment
from ctsearcher_jax.metrics.scanmatch.kernel import (
    KERNELS,
    KernelChoice,
    check_kernel,
    choose_kernel,
    devices_of,
)
from ctsearcher_jax.metrics.scanmatch.metric import (
    STRIPE,
    default_chunk,
    default_stripe,
    default_threads,
    nw_max_batch,
    scanmatch,
    scanmatch_batch,
    score_pairs,
)
from ctsearcher_jax.metrics.scanmatch.reward import (
    CPU_GROUP_SIZE,
    CPU_STRIPE_WIDTH,
    DEFAULT_DURATION_CAP_S,
    default_group_size,
    hmean_reward,
    max_expanded_length,
    scanmatch_pairs,
)
from ctsearcher_jax.metrics.scanmatch.stripe import stripe_kernel
from ctsearcher_jax.metrics.scanmatch.symbols import (
    WITH_DURATION,
    WITHOUT_DURATION,
    ScanMatchParams,
    fixations_to_symbols,
    substitution_matrix,
    symbol_bins,
)

__all__ = [
    "CPU_GROUP_SIZE", "CPU_STRIPE_WIDTH", "DEFAULT_DURATION_CAP_S", "KERNELS", "STRIPE",
    "WITHOUT_DURATION", "WITH_DURATION", "KernelChoice", "ScanMatchParams", "check_kernel",
    "choose_kernel", "default_chunk", "default_group_size", "default_stripe", "default_threads",
    "devices_of", "fixations_to_symbols", "gap0_alignment", "hmean_reward", "max_expanded_length",
    "nw_max_batch", "scanmatch", "scanmatch_batch", "scanmatch_pairs", "score_pairs",
    "stripe_kernel", "substitution_matrix", "symbol_bins",
]
