// A whole GRU sequence, forward and backward, in one oneDNN RNN primitive call each: the
// XLA FFI handlers behind jaxgru.onednn (the "onednn" execution kernel).
//
// Layouts are Keras's, which are oneDNN's plain ones with one layer and one direction:
//   x (time, batch, features)   tnc        h0, h_last (batch, units)  ldnc (l = d = 1)
//   kernel (features, 3 units)  ldigo      recurrent_kernel (units, 3 units)  ldigo
//   bias (gates, units)         ldgo: 3 rows z|r|h for reset_after=False (oneDNN's
//                               vanilla_gru), 4 rows u|r|o|u' for reset_after=True (lbr_gru)
//   outputs (time, batch, units) tnc
// Gates u|r|o are Keras's z|r|h. jaxgru.onednn turns the Keras bias into these rows.
//
// `threads` is how many OpenMP threads oneDNN uses (0: OpenMP's default, every core); it is
// set on the calling thread before a primitive is made or run, and is part of the plan's key
// (oneDNN sizes a primitive's scratchpad for its thread count).
//
// The primitives are made once per shape and kept (a mutex guards the table). The weights
// are reordered into the layout each primitive asks for on every call (the backward one wants
// them transposed); the backward pass's weight and bias gradients accumulate (oneDNN 3.2's
// C++ GRU API passes no diff_weights_overwrite flag), so they are zeroed before it runs,
// which makes them overwrite.

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

constexpr auto kF32 = memory::data_type::f32;
constexpr auto kLeftToRight = dnnl::rnn_direction::unidirectional_left2right;

struct Shape {
  int64_t time, batch, features, units;
  bool reset_after;
  int32_t threads;
  int64_t bias_rows() const { return reset_after ? 4 : 3; }
  bool operator<(const Shape& o) const {
    return std::tie(time, batch, features, units, reset_after, threads) <
           std::tie(o.time, o.batch, o.features, o.units, o.reset_after, o.threads);
  }
};

// OpenMP's thread count when the library was first used (OMP_NUM_THREADS, or every core).
int default_threads() {
  static const int threads = omp_get_max_threads();
  return threads;
}

// Sets the calling thread's OpenMP thread count for `requested` (0: the default); returns it.
int32_t use_threads(int32_t requested) {
  const int32_t threads = requested > 0 ? requested : default_threads();
  omp_set_num_threads(threads);
  return threads;
}

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// The arrays' own layouts (see the file's head).
struct UserDescs {
  memory::desc layer, state, weights_layer, weights_iter, bias, outputs;
  explicit UserDescs(const Shape& s)
      : layer({s.time, s.batch, s.features}, kF32, Tag::tnc),
        state({1, 1, s.batch, s.units}, kF32, Tag::ldnc),
        weights_layer({1, 1, s.features, 3, s.units}, kF32, Tag::ldigo),
        weights_iter({1, 1, s.units, 3, s.units}, kF32, Tag::ldigo),
        bias({1, 1, s.bias_rows(), s.units}, kF32, Tag::ldgo),
        outputs({s.time, s.batch, s.units}, kF32, Tag::tnc) {}
};

memory::desc any_layout(const memory::desc& d) {
  return memory::desc(d.get_dims(), kF32, Tag::any);
}

struct Forward {
  dnnl::primitive primitive;
  memory::desc weights_layer, weights_iter, workspace, scratchpad;
};

struct Backward {
  dnnl::primitive primitive;
  memory::desc weights_layer, weights_iter, diff_weights_layer, diff_weights_iter, scratchpad;
};

// Each call brings its own scratchpad (oneDNN's scratchpad_mode::user), so no state is shared
// between calls, whichever XLA thread makes them.
dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

struct Plan {
  UserDescs user;
  std::unique_ptr<Forward> inference, training;
  std::unique_ptr<Backward> backward;
  explicit Plan(const Shape& s) : user(s) {}
};

template <class Fwd>
std::unique_ptr<Forward> make_forward(const UserDescs& u, dnnl::prop_kind kind,
                                      typename Fwd::primitive_desc* keep = nullptr) {
  typename Fwd::primitive_desc pd(cpu_engine(), kind, kLeftToRight, u.layer, u.state,
                                  any_layout(u.weights_layer), any_layout(u.weights_iter),
                                  u.bias, u.outputs, u.state, user_scratchpad());
  if (keep) *keep = pd;
  return std::make_unique<Forward>(Forward{Fwd(pd), pd.weights_layer_desc(),
                                           pd.weights_iter_desc(), pd.workspace_desc(),
                                           pd.scratchpad_desc()});
}

template <class Fwd, class Bwd>
void make_training(Plan& plan) {
  const UserDescs& u = plan.user;
  typename Fwd::primitive_desc forward_pd;
  plan.training = make_forward<Fwd>(u, dnnl::prop_kind::forward_training, &forward_pd);
  auto wl = any_layout(u.weights_layer), wi = any_layout(u.weights_iter);
  typename Bwd::primitive_desc pd(cpu_engine(), dnnl::prop_kind::backward, kLeftToRight,
                                  u.layer, u.state, wl, wi, u.bias, u.outputs, u.state,
                                  u.layer, u.state, wl, wi, u.bias, u.outputs, u.state,
                                  forward_pd, user_scratchpad());
  plan.backward = std::make_unique<Backward>(
      Backward{Bwd(pd), pd.weights_layer_desc(), pd.weights_iter_desc(),
               pd.diff_weights_layer_desc(), pd.diff_weights_iter_desc(),
               pd.scratchpad_desc()});
}

// The plan for `shape`, with its inference or training (and backward) primitives made.
Plan& plan_for(const Shape& shape, bool training) {
  static std::mutex mutex;
  static std::map<Shape, std::unique_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto& plan = plans[shape];
  if (!plan) plan = std::make_unique<Plan>(shape);
  if (training && !plan->training) {
    if (shape.reset_after)
      make_training<dnnl::lbr_gru_forward, dnnl::lbr_gru_backward>(*plan);
    else
      make_training<dnnl::gru_forward, dnnl::gru_backward>(*plan);
  }
  if (!training && !plan->inference) {
    auto kind = dnnl::prop_kind::forward_inference;
    plan->inference = shape.reset_after ? make_forward<dnnl::lbr_gru_forward>(plan->user, kind)
                                        : make_forward<dnnl::gru_forward>(plan->user, kind);
  }
  return *plan;
}

memory wrap(const memory::desc& desc, const void* data) {
  return memory(desc, cpu_engine(), const_cast<void*>(data));
}

// `source` in the layout `wanted` (itself when it already is).
memory in_layout(const memory& source, const memory::desc& wanted, dnnl::stream& stream) {
  if (source.get_desc() == wanted) return source;
  memory target(wanted, cpu_engine());
  dnnl::reorder(source, target).execute(stream, const_cast<memory&>(source), target);
  return target;
}

// One oneDNN GRU call at a time: XLA may start independent calls on two of its threads at
// once, and concurrent executions of these RNN primitives were measured to give wrong
// gradients (tests/test_onednn.py); each call already uses every core through OpenMP.
std::mutex& execution_mutex() {
  static std::mutex mutex;
  return mutex;
}

void zero(const memory& m) { std::memset(m.get_data_handle(), 0, m.get_desc().get_size()); }

ffi::Error failed(const std::exception& e) {
  return ffi::Error(ffi::ErrorCode::kInternal, std::string("jaxgru oneDNN GRU: ") + e.what());
}

Shape shape_of(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& h0, int32_t reset_after,
               int32_t threads) {
  auto xd = x.dimensions(), hd = h0.dimensions();
  return Shape{xd[0], xd[1], xd[2], hd[1], reset_after != 0, use_threads(threads)};
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> kernel, ffi::Buffer<ffi::F32> recurrent_kernel,
                       ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> outputs,
                       ffi::ResultBuffer<ffi::F32> h_last, ffi::ResultBuffer<ffi::U8> workspace,
                       int32_t reset_after, int32_t training, int32_t threads) {
  try {
    Shape shape = shape_of(x, h0, reset_after, threads);
    Plan& plan = plan_for(shape, training != 0);
    std::lock_guard<std::mutex> lock(execution_mutex());
    const Forward& f = training ? *plan.training : *plan.inference;
    const UserDescs& u = plan.user;
    dnnl::stream stream(cpu_engine());
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC_LAYER, wrap(u.layer, x.typed_data())},
        {DNNL_ARG_SRC_ITER, wrap(u.state, h0.typed_data())},
        {DNNL_ARG_WEIGHTS_LAYER,
         in_layout(wrap(u.weights_layer, kernel.typed_data()), f.weights_layer, stream)},
        {DNNL_ARG_WEIGHTS_ITER,
         in_layout(wrap(u.weights_iter, recurrent_kernel.typed_data()), f.weights_iter, stream)},
        {DNNL_ARG_BIAS, wrap(u.bias, bias.typed_data())},
        {DNNL_ARG_DST_LAYER, wrap(u.outputs, outputs->typed_data())},
        {DNNL_ARG_DST_ITER, wrap(u.state, h_last->typed_data())},
        {DNNL_ARG_SCRATCHPAD, memory(f.scratchpad, cpu_engine())},
    };
    if (training) args.insert({DNNL_ARG_WORKSPACE, wrap(f.workspace, workspace->typed_data())});
    f.primitive.execute(stream, args);
    stream.wait();
    return ffi::Error::Success();
  } catch (const std::exception& e) {
    return failed(e);
  }
}

ffi::Error BackwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> h0,
                        ffi::Buffer<ffi::F32> kernel, ffi::Buffer<ffi::F32> recurrent_kernel,
                        ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> outputs,
                        ffi::Buffer<ffi::F32> h_last, ffi::Buffer<ffi::U8> workspace,
                        ffi::Buffer<ffi::F32> d_outputs, ffi::Buffer<ffi::F32> d_h_last,
                        ffi::ResultBuffer<ffi::F32> d_x, ffi::ResultBuffer<ffi::F32> d_h0,
                        ffi::ResultBuffer<ffi::F32> d_kernel,
                        ffi::ResultBuffer<ffi::F32> d_recurrent_kernel,
                        ffi::ResultBuffer<ffi::F32> d_bias, int32_t reset_after,
                        int32_t threads) {
  try {
    Shape shape = shape_of(x, h0, reset_after, threads);
    Plan& plan = plan_for(shape, true);
    std::lock_guard<std::mutex> lock(execution_mutex());
    const Backward& b = *plan.backward;
    const UserDescs& u = plan.user;
    dnnl::stream stream(cpu_engine());
    memory d_kernel_user = wrap(u.weights_layer, d_kernel->typed_data());
    memory d_recurrent_user = wrap(u.weights_iter, d_recurrent_kernel->typed_data());
    memory d_kernel_mem = d_kernel_user.get_desc() == b.diff_weights_layer
                              ? d_kernel_user
                              : memory(b.diff_weights_layer, cpu_engine());
    memory d_recurrent_mem = d_recurrent_user.get_desc() == b.diff_weights_iter
                                 ? d_recurrent_user
                                 : memory(b.diff_weights_iter, cpu_engine());
    memory d_bias_mem = wrap(u.bias, d_bias->typed_data());
    for (const memory& m : {d_kernel_mem, d_recurrent_mem, d_bias_mem}) zero(m);
    b.primitive.execute(
        stream,
        {{DNNL_ARG_SRC_LAYER, wrap(u.layer, x.typed_data())},
         {DNNL_ARG_SRC_ITER, wrap(u.state, h0.typed_data())},
         {DNNL_ARG_WEIGHTS_LAYER,
          in_layout(wrap(u.weights_layer, kernel.typed_data()), b.weights_layer, stream)},
         {DNNL_ARG_WEIGHTS_ITER,
          in_layout(wrap(u.weights_iter, recurrent_kernel.typed_data()), b.weights_iter, stream)},
         {DNNL_ARG_BIAS, wrap(u.bias, bias.typed_data())},
         {DNNL_ARG_DST_LAYER, wrap(u.outputs, outputs.typed_data())},
         {DNNL_ARG_DST_ITER, wrap(u.state, h_last.typed_data())},
         {DNNL_ARG_WORKSPACE, wrap(plan.training->workspace, workspace.typed_data())},
         {DNNL_ARG_DIFF_DST_LAYER, wrap(u.outputs, d_outputs.typed_data())},
         {DNNL_ARG_DIFF_DST_ITER, wrap(u.state, d_h_last.typed_data())},
         {DNNL_ARG_DIFF_SRC_LAYER, wrap(u.layer, d_x->typed_data())},
         {DNNL_ARG_DIFF_SRC_ITER, wrap(u.state, d_h0->typed_data())},
         {DNNL_ARG_DIFF_WEIGHTS_LAYER, d_kernel_mem},
         {DNNL_ARG_DIFF_WEIGHTS_ITER, d_recurrent_mem},
         {DNNL_ARG_DIFF_BIAS, d_bias_mem},
         {DNNL_ARG_SCRATCHPAD, memory(b.scratchpad, cpu_engine())}});
    if (d_kernel_mem != d_kernel_user)
      dnnl::reorder(d_kernel_mem, d_kernel_user).execute(stream, d_kernel_mem, d_kernel_user);
    if (d_recurrent_mem != d_recurrent_user)
      dnnl::reorder(d_recurrent_mem, d_recurrent_user)
          .execute(stream, d_recurrent_mem, d_recurrent_user);
    stream.wait();
    return ffi::Error::Success();
  } catch (const std::exception& e) {
    return failed(e);
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxgru_onednn_gru_forward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // kernel
                                  .Arg<ffi::Buffer<ffi::F32>>()  // recurrent_kernel
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias rows
                                  .Ret<ffi::Buffer<ffi::F32>>()  // outputs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h_last
                                  .Ret<ffi::Buffer<ffi::U8>>()   // workspace
                                  .Attr<int32_t>("reset_after")
                                  .Attr<int32_t>("training")
                                  .Attr<int32_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxgru_onednn_gru_backward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // kernel
                                  .Arg<ffi::Buffer<ffi::F32>>()  // recurrent_kernel
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias rows
                                  .Arg<ffi::Buffer<ffi::F32>>()  // outputs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h_last
                                  .Arg<ffi::Buffer<ffi::U8>>()   // workspace
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d_outputs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d_h_last
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d_x
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d_h0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d_kernel
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d_recurrent_kernel
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d_bias rows
                                  .Attr<int32_t>("reset_after")
                                  .Attr<int32_t>("threads"));

// For jaxgru.onednn, through ctypes: the forward workspace's size in bytes for a shape (JAX
// allocates it when it traces), or -1 with the reason in `error` (`error_size` bytes).
extern "C" int64_t jaxgru_onednn_workspace_bytes(int64_t time, int64_t batch, int64_t features,
                                                 int64_t units, int32_t reset_after,
                                                 int32_t threads, char* error,
                                                 int64_t error_size) {
  try {
    Shape shape{time, batch, features, units, reset_after != 0, use_threads(threads)};
    return static_cast<int64_t>(plan_for(shape, true).training->workspace.get_size());
  } catch (const std::exception& e) {
    std::snprintf(error, static_cast<size_t>(error_size), "%s", e.what());
    return -1;
  }
}

// oneDNN's version, "major.minor.patch".
extern "C" void jaxgru_onednn_version(char* out, int64_t size) {
  const dnnl_version_t* v = dnnl_version();
  std::snprintf(out, static_cast<size_t>(size), "%d.%d.%d", v->major, v->minor, v->patch);
}
