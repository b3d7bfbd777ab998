// VM products on a CPU: bilinear plane x linear line interpolation at many points, and its
// gradient, as XLA FFI handlers (see jaxnerf360/fields/vm_kernel.py).
//
// XLA:CPU runs the same maths written with gathers at a few GB/s: its fusions recompute the
// indices for every rank and materialise every corner. Here each point reads its four plane
// rows and two line rows once, contiguous in rank (planes are passed channels-last).
//
// Index rule (as vm.interp_plane): i0 = clamp(floor(u), 0, n - 2), f = u - i0.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// A point's cell: element offsets of its four plane rows (00, 01, 10, 11) and two line rows,
// its bilinear weights, and its fractions along the three axes.
struct Corner {
  int64_t p[4], l[2];
  float w[4], fu, fv, fw;
};

// The cell's first index, clamped in floating point: a NaN or infinite coordinate lands in
// a valid cell (and its NaN weight poisons the output, as with XLA's gathers) instead of
// reading outside the plane.
inline int64_t Floor(float x, int64_t n) {
  const float last = static_cast<float>(std::max<int64_t>(n - 2, 0));
  const float f = std::floor(x);
  if (!(f >= 0.0f)) return 0;
  return f > last ? static_cast<int64_t>(last) : static_cast<int64_t>(f);
}

inline Corner Locate(const float* uvw, int64_t na, int64_t nb, int64_t nc, int64_t r) {
  Corner c;
  int64_t i = Floor(uvw[0], na), j = Floor(uvw[1], nb), k = Floor(uvw[2], nc);
  c.fu = uvw[0] - i;
  c.fv = uvw[1] - j;
  c.fw = uvw[2] - k;
  const int64_t base = (i * nb + j) * r;
  c.p[0] = base;
  c.p[1] = base + r;
  c.p[2] = base + nb * r;
  c.p[3] = base + (nb + 1) * r;
  c.l[0] = k * r;
  c.l[1] = (k + 1) * r;
  c.w[0] = (1 - c.fu) * (1 - c.fv);
  c.w[1] = (1 - c.fu) * c.fv;
  c.w[2] = c.fu * (1 - c.fv);
  c.w[3] = c.fu * c.fv;
  return c;
}

inline float PlaneValue(const float* plane, const Corner& c, int64_t k) {
  return plane[c.p[0] + k] * c.w[0] + plane[c.p[1] + k] * c.w[1] + plane[c.p[2] + k] * c.w[2] +
         plane[c.p[3] + k] * c.w[3];
}

inline float LineValue(const float* line, const Corner& c, int64_t k) {
  return line[c.l[0] + k] * (1 - c.fw) + line[c.l[1] + k] * c.fw;
}

// Runs body(begin, end) over [0, n) in chunks on the caller and XLA's intra-op pool. Chunks
// are claimed from a counter, so the caller never waits for a chunk nobody has started
// (a pool busy with other operations cannot deadlock it).
template <typename Body>
void Parallel(ffi::ThreadPool& pool, int64_t n, int64_t chunks, Body body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  if (chunks <= 1) {
    body(0, 0, n);
    return;
  }
  auto state = std::make_shared<State>();
  auto work = [state, n, chunks, body]() {
    for (int64_t c; (c = state->next.fetch_add(1)) < chunks;) {
      body(c, n * c / chunks, n * (c + 1) / chunks);
      if (state->done.fetch_add(1) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->cv.notify_all();
      }
    }
  };
  for (int64_t t = 1; t < chunks; ++t) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == chunks; });
}

int64_t Chunks(ffi::ThreadPool& pool, int64_t points) {
  int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  return std::max<int64_t>(1, std::min<int64_t>(threads, points / 2048));
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> plane,
                   ffi::Buffer<ffi::F32> line, ffi::Buffer<ffi::F32> coords,
                   ffi::ResultBuffer<ffi::F32> out) {
  auto pd = plane.dimensions();
  auto ld = line.dimensions();
  auto cd = coords.dimensions();
  if (pd.size() != 3 || ld.size() != 2 || cd.size() != 2 || cd[1] != 3 || ld[1] != pd[2]) {
    return ffi::Error::InvalidArgument("vm forward: expects plane [Na, Nb, R], line [Nc, R], "
                                       "coords [P, 3]");
  }
  const int64_t na = pd[0], nb = pd[1], r = pd[2], nc = ld[0], p = cd[0];
  const float* pl = plane.typed_data();
  const float* li = line.typed_data();
  const float* uvw = coords.typed_data();
  float* o = out->typed_data();
  Parallel(pool, p, Chunks(pool, p), [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const Corner c = Locate(uvw + 3 * n, na, nb, nc, r);
      float* dst = o + n * r;
      for (int64_t k = 0; k < r; ++k) dst[k] = PlaneValue(pl, c, k) * LineValue(li, c, k);
    }
  });
  return ffi::Error::Success();
}

// Gradients of sum(ct * forward) with respect to the plane, the line and (when
// `with_coords`) the grid coordinates. Each chunk of points scatters into its own copy of
// the plane and line gradients; the copies are summed at the end.
ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> plane,
                    ffi::Buffer<ffi::F32> line, ffi::Buffer<ffi::F32> coords,
                    ffi::Buffer<ffi::F32> ct, ffi::ResultBuffer<ffi::F32> gplane,
                    ffi::ResultBuffer<ffi::F32> gline, ffi::ResultBuffer<ffi::F32> gcoords,
                    bool with_coords) {
  auto pd = plane.dimensions();
  auto ld = line.dimensions();
  auto cd = coords.dimensions();
  if (pd.size() != 3 || ld.size() != 2 || cd.size() != 2 || cd[1] != 3 || ld[1] != pd[2] ||
      ct.dimensions().size() != 2 || ct.dimensions()[0] != cd[0] ||
      ct.dimensions()[1] != pd[2]) {
    return ffi::Error::InvalidArgument("vm backward: expects plane [Na, Nb, R], line [Nc, R], "
                                       "coords [P, 3], cotangent [P, R]");
  }
  const int64_t na = pd[0], nb = pd[1], r = pd[2], nc = ld[0], p = cd[0];
  const float* pl = plane.typed_data();
  const float* li = line.typed_data();
  const float* uvw = coords.typed_data();
  const float* g = ct.typed_data();
  float* gp = gplane->typed_data();
  float* gl = gline->typed_data();
  float* gc = gcoords->typed_data();
  const int64_t plane_size = na * nb * r, line_size = nc * r;
  const int64_t chunks = Chunks(pool, p);
  // Chunk 0 writes the outputs; the others their own zeroed copies.
  std::vector<std::vector<float>> extra(chunks - 1);
  for (auto& v : extra) v.assign(plane_size + line_size, 0.0f);
  std::fill(gp, gp + plane_size, 0.0f);
  std::fill(gl, gl + line_size, 0.0f);
  Parallel(pool, p, chunks, [&](int64_t chunk, int64_t begin, int64_t end) {
    float* tp = chunk == 0 ? gp : extra[chunk - 1].data();
    float* tl = chunk == 0 ? gl : extra[chunk - 1].data() + plane_size;
    for (int64_t n = begin; n < end; ++n) {
      const Corner c = Locate(uvw + 3 * n, na, nb, nc, r);
      const float* gn = g + n * r;
      float du = 0, dv = 0, dw = 0;
      for (int64_t k = 0; k < r; ++k) {
        const float a = gn[k] * LineValue(li, c, k);   // d/d(plane value)
        const float b = gn[k] * PlaneValue(pl, c, k);  // d/d(line value)
        for (int q = 0; q < 4; ++q) tp[c.p[q] + k] += a * c.w[q];
        tl[c.l[0] + k] += b * (1 - c.fw);
        tl[c.l[1] + k] += b * c.fw;
        if (with_coords) {
          const float p00 = pl[c.p[0] + k], p01 = pl[c.p[1] + k];
          const float p10 = pl[c.p[2] + k], p11 = pl[c.p[3] + k];
          du += a * ((1 - c.fv) * (p10 - p00) + c.fv * (p11 - p01));
          dv += a * ((1 - c.fu) * (p01 - p00) + c.fu * (p11 - p10));
          dw += b * (li[c.l[1] + k] - li[c.l[0] + k]);
        }
      }
      gc[3 * n] = du;
      gc[3 * n + 1] = dv;
      gc[3 * n + 2] = dw;
    }
  });
  for (const auto& v : extra) {
    for (int64_t i = 0; i < plane_size; ++i) gp[i] += v[i];
    for (int64_t i = 0; i < line_size; ++i) gl[i] += v[plane_size + i];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNerf360VmForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNerf360VmBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("with_coords"));
