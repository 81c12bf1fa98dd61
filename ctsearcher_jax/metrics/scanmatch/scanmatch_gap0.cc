// ScanMatch's Needleman-Wunsch with gap 0, final cell F[la, lb] of each pair: an XLA FFI handler
// for CPU (float32 and float64). Built and registered by ctsearcher_jax/metrics/scanmatch/native.py;
// its jnp twin is `metrics.scanmatch.stripe_kernel`, which gives the same numbers.
//
// With gap 0, F[i][j] = max(F[i-1][j], F[i][j-1], F[i-1][j-1] + S[a_i][b_j]), F[0][.] = F[.][0] = 0,
// so F is nondecreasing along rows and columns. Unrolling the left moves of row i:
//   F[i][j] = max(P[j], max_{j' <= j} (P[j'-1] + S[a_i][b_j']))          (P = row i-1)
// The column sequence is made of runs of one symbol (a fixation repeated per 25 ms bin); inside
// run v the score g_v = S[a_i][b_v] is constant and P is nondecreasing, so the inner maximum over
// the run's j' <= j is P[j-1] + g_v, and over the earlier runs it is F[i][end of run v-1]:
//   F[i][j] = max(P[j], P[j-1] + g_v, F[i][start_v - 1])        for j in run v.
// Every cell is then independent of its row neighbours (a loop the compiler vectorises) except
// through one carried value per run. The candidates are the recurrence's own sums (the same
// additions in the same order, combined only by max), so the result is bit-identical to it.
// The score is symmetric (F of (b, a) is F of (a, b) transposed), so each pair puts on the rows
// the sequence that makes rows x column-runs smaller.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Workspace {
  std::vector<int64_t> run_end;  // one past the run's last column, 1-based columns
  std::vector<int32_t> run_symbol;
};

int64_t Runs(const int32_t* seq, int64_t n, Workspace* ws) {
  ws->run_end.clear();
  ws->run_symbol.clear();
  for (int64_t j = 0; j < n;) {
    int64_t e = j + 1;
    while (e < n && seq[e] == seq[j]) ++e;
    ws->run_symbol.push_back(seq[j]);
    ws->run_end.push_back(e);
    j = e;
  }
  return static_cast<int64_t>(ws->run_end.size());
}

template <typename T>
T PairMax(const int32_t* a, int64_t la, const int32_t* b, int64_t lb, const T* sub, int64_t k,
          Workspace* ws, std::vector<T>* prev_buf, std::vector<T>* cur_buf) {
  if (la == 0 || lb == 0) return T(0);
  // Cost ~ rows x (columns + column runs): choose the orientation with fewer row x run steps.
  const int64_t runs_a = Runs(a, la, ws);
  const int64_t runs_b = Runs(b, lb, ws);  // the workspace now holds b's runs
  if (la * runs_b > lb * runs_a) {
    std::swap(a, b);
    std::swap(la, lb);
    Runs(b, lb, ws);
  }
  const int64_t runs = static_cast<int64_t>(ws->run_end.size());
  prev_buf->assign(lb + 1, T(0));
  cur_buf->assign(lb + 1, T(0));
  T* prev = prev_buf->data();
  T* cur = cur_buf->data();
  for (int64_t i = 0; i < la; ++i) {
    const T* row = sub + static_cast<int64_t>(a[i]) * k;
    T* __restrict out = cur;
    const T* __restrict up = prev;
    T left = T(0);  // F[i][start of run - 1]
    int64_t start = 1;
    for (int64_t v = 0; v < runs; ++v) {
      const T g = row[ws->run_symbol[v]];
      const int64_t end = ws->run_end[v];
      for (int64_t j = start; j <= end; ++j) {
        const T diag = up[j - 1] + g;
        const T best = up[j] > diag ? up[j] : diag;
        out[j] = best > left ? best : left;
      }
      left = out[end];
      start = end + 1;
    }
    std::swap(prev, cur);
  }
  return prev[lb];
}

template <ffi::DataType DT>
ffi::Error Gap0Max(ffi::Buffer<ffi::S32> a, ffi::Buffer<ffi::S32> la, ffi::Buffer<ffi::S32> b,
                   ffi::Buffer<ffi::S32> lb, ffi::Buffer<DT> sub, int64_t threads,
                   ffi::ResultBuffer<DT> out) {
  using T = ffi::NativeType<DT>;
  const int64_t pairs = static_cast<int64_t>(la.element_count());
  auto count_of = [](const auto& buffer) { return static_cast<int64_t>(buffer.element_count()); };
  if (a.dimensions().size() < 1 || b.dimensions().size() < 1 || sub.dimensions().size() < 2) {
    return ffi::Error::InvalidArgument("scanmatch_gap0: a, b need a sequence axis, sub is (K, K)");
  }
  const int64_t n = a.dimensions().back(), m = b.dimensions().back();
  const int64_t k = sub.dimensions().back();
  if (k < 1 || count_of(lb) != pairs || count_of(*out) != pairs || count_of(a) != pairs * n ||
      count_of(b) != pairs * m || count_of(sub) % (k * k) != 0) {
    return ffi::Error::InvalidArgument("scanmatch_gap0: a (P, N), la (P,), b (P, M), lb (P,), "
                                       "sub (K, K), out (P,) disagree on P or K");
  }
  const int32_t* pa = a.typed_data();
  const int32_t* pb = b.typed_data();
  const int32_t* pla = la.typed_data();
  const int32_t* plb = lb.typed_data();
  // Lengths and symbols come from the caller's own arrays: check them all before any read
  // through them, so a bad input is an error, never an out-of-bounds read.
  for (int64_t q = 0; q < pairs; ++q) {
    if (pla[q] < 0 || pla[q] > n || plb[q] < 0 || plb[q] > m) {
      return ffi::Error::InvalidArgument("scanmatch_gap0: pair " + std::to_string(q) +
                                         " has a length outside [0, padded length]");
    }
    for (int64_t i = 0; i < pla[q]; ++i) {
      if (pa[q * n + i] < 0 || pa[q * n + i] >= k) {
        return ffi::Error::InvalidArgument("scanmatch_gap0: symbol outside [0, K)");
      }
    }
    for (int64_t j = 0; j < plb[q]; ++j) {
      if (pb[q * m + j] < 0 || pb[q * m + j] >= k) {
        return ffi::Error::InvalidArgument("scanmatch_gap0: symbol outside [0, K)");
      }
    }
  }
  const T* table = sub.typed_data();
  for (int64_t r = 0; r < k; ++r) {
    for (int64_t c = r + 1; c < k; ++c) {
      if (table[r * k + c] != table[c * k + r]) {
        return ffi::Error::InvalidArgument("scanmatch_gap0: the substitution matrix must be "
                                           "symmetric (pairs are scored in either orientation)");
      }
    }
  }
  T* result = out->typed_data();
  std::atomic<int64_t> next{0};
  auto worker = [&]() {
    Workspace ws;
    std::vector<T> prev, cur;
    for (int64_t q; (q = next.fetch_add(1)) < pairs;) {
      result[q] = PairMax<T>(pa + q * n, pla[q], pb + q * m, plb[q], table, k, &ws, &prev, &cur);
    }
  };
  const int64_t count = std::max<int64_t>(1, std::min<int64_t>(threads, pairs));
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < count; ++t) pool.emplace_back(worker);
  worker();
  for (auto& thread : pool) thread.join();
  return ffi::Error::Success();
}

}  // namespace

#define CTSEARCHER_GAP0_BINDING(DT)                                                  \
  ffi::Ffi::Bind()                                                                   \
      .Arg<ffi::Buffer<ffi::S32>>()                                                  \
      .Arg<ffi::Buffer<ffi::S32>>()                                                  \
      .Arg<ffi::Buffer<ffi::S32>>()                                                  \
      .Arg<ffi::Buffer<ffi::S32>>()                                                  \
      .Arg<ffi::Buffer<DT>>()                                                        \
      .Attr<int64_t>("threads")                                                      \
      .Ret<ffi::Buffer<DT>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(CtsearcherScanMatchGap0F32, Gap0Max<ffi::F32>,
                              CTSEARCHER_GAP0_BINDING(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(CtsearcherScanMatchGap0F64, Gap0Max<ffi::F64>,
                              CTSEARCHER_GAP0_BINDING(ffi::F64));
