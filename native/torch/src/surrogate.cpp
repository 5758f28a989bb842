// The surrogate: a TorchScript version of a registry model held in LibTorch, swapped for a
// newer one at most every `poll` seconds, called on float32 batches. A C ABI over C++: every
// exception stops here and becomes a code and a message.
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "internal.h"

using Clock = std::chrono::steady_clock;

namespace {

// One loaded version: immutable once made, shared by the calls that run it.
struct Version {
    int64_t number;
    torch::jit::Module module;
    at::ScalarType dtype; // of the model's parameters: batches are converted to it
};

} // namespace

struct simai_surrogate {
    simai_store *store;
    std::string name;
    double poll;                      // seconds
    std::mutex loading;               // one refresh at a time
    std::mutex state;                 // guards current and next_check
    std::shared_ptr<Version> current; // null until the first version is loaded
    Clock::time_point next_check;
    std::set<int64_t> skipped; // versions that could not be loaded
};

namespace {

// The message of any exception, without LibTorch's backtrace: TorchScript errors end, after
// the script's traceback, with the line that says what went wrong.
std::string message_of(const std::exception &e)
{
    auto *c10 = dynamic_cast<const c10::Error *>(&e);
    std::string text = c10 ? c10->what_without_backtrace() : e.what();
    while (!text.empty() && text.back() == '\n')
        text.pop_back();
    return text.substr(text.find_last_of('\n') + 1); // npos + 1 == 0: the whole text
}

// Run `body` and turn what it throws into a code and message.
template <class F> int guarded(const char *what, F &&body)
{
    try {
        return body();
    } catch (const std::bad_alloc &) {
        return simai_torch_fail(SIMAI_ERR_NOMEM, "%s: out of memory", what);
    } catch (const std::exception &e) {
        return simai_torch_fail(SIMAI_ERR_INVALID, "%s: %s", what, message_of(e).c_str());
    } catch (...) {
        return simai_torch_fail(SIMAI_ERR_INVALID, "%s: an unknown C++ exception", what);
    }
}

// The time `seconds` from now (at most about 30 years on: no overflow).
Clock::time_point after(double seconds)
{
    std::chrono::duration<double> d(std::min(seconds, 1e9));
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(d);
}

std::shared_ptr<Version> held(simai_surrogate *s)
{
    std::lock_guard<std::mutex> lock(s->state);
    return s->current;
}

// Load version `number` from its bytes: SIMAI_ERR_CORRUPT if LibTorch cannot.
int load(simai_surrogate *s, int64_t number, std::shared_ptr<Version> &out)
{
    char *data = nullptr;
    size_t n = 0;
    int rc = simai_torch_read(s->store, s->name.c_str(), number, &data, &n);
    if (rc != SIMAI_OK)
        return rc;
    std::unique_ptr<char, decltype(&std::free)> owned(data, &std::free);
    try {
        std::istringstream bytes(std::string(data, n));
        auto module = torch::jit::load(bytes, torch::kCPU);
        module.eval();
        at::ScalarType dtype = at::kFloat;
        for (const auto &p : module.parameters()) {
            dtype = p.scalar_type();
            break;
        }
        out = std::make_shared<Version>(Version{number, std::move(module), dtype});
        return SIMAI_OK;
    } catch (const std::bad_alloc &) {
        throw;
    } catch (const std::exception &e) {
        return simai_torch_fail(SIMAI_ERR_CORRUPT, "model '%s' version %lld: LibTorch cannot "
                                "load it: %s", s->name.c_str(), (long long)number,
                                message_of(e).c_str());
    }
}

// Check the latest pointer; load and swap in a newer version (the caller holds `loading`).
int refresh(simai_surrogate *s, int *swapped)
{
    int64_t latest = 0, have;
    int torchscript = 0;
    {
        std::lock_guard<std::mutex> lock(s->state);
        s->next_check = after(s->poll);
        have = s->current ? s->current->number : 0;
    }
    int rc = simai_torch_latest(s->store, s->name.c_str(), &latest, &torchscript);
    if (rc == SIMAI_ERR_NOT_FOUND)
        return SIMAI_OK; // nothing published yet
    if (rc != SIMAI_OK || latest <= have || s->skipped.count(latest))
        return rc;
    if (!torchscript) {
        s->skipped.insert(latest);
        return simai_torch_fail(SIMAI_ERR_UNSUPPORTED, "model '%s' version %lld is not "
                                "TorchScript: libsimai_torch runs TorchScript versions only",
                                s->name.c_str(), (long long)latest);
    }
    std::shared_ptr<Version> next;
    rc = load(s, latest, next);
    if (rc == SIMAI_ERR_NOT_FOUND)
        return SIMAI_OK; // pruned by a newer version: the next check finds that one
    if (rc == SIMAI_ERR_CORRUPT) // the version itself is bad; other errors may pass
        s->skipped.insert(latest);
    if (rc != SIMAI_OK)
        return rc;
    std::lock_guard<std::mutex> lock(s->state);
    s->current = std::move(next);
    if (swapped)
        *swapped = 1;
    return SIMAI_OK;
}

// Strides of an array of these sizes, in elements: row-major, or column-major.
std::vector<int64_t> strides_of(const std::vector<int64_t> &sizes, bool column_major)
{
    std::vector<int64_t> strides(sizes.size());
    int64_t step = 1;
    for (size_t k = 0; k < sizes.size(); k++) {
        size_t i = column_major ? k : sizes.size() - 1 - k;
        strides[i] = step;
        step *= sizes[i] > 0 ? sizes[i] : 1;
    }
    return strides;
}

// The model of `v` on batch x; its output, as float32, into y.
int run(simai_surrogate *s, Version &v, int ndim, const uint64_t *shape, const float *x,
        float *y, size_t cap, int *y_ndim, uint64_t *y_shape, bool column_major)
{
    c10::InferenceMode inference;
    std::vector<int64_t> sizes(shape, shape + ndim);
    auto in = at::from_blob(const_cast<float *>(x), sizes, strides_of(sizes, column_major),
                            at::TensorOptions().dtype(at::kFloat));
    at::IValue result;
    try {
        result = v.module.forward({in.to(v.dtype)});
    } catch (const std::bad_alloc &) {
        throw;
    } catch (const std::exception &e) {
        return simai_torch_fail(SIMAI_ERR_INVALID, "model '%s' version %lld refused the batch: "
                                "%s", s->name.c_str(), (long long)v.number,
                                message_of(e).c_str());
    }
    if (!result.isTensor())
        return simai_torch_fail(SIMAI_ERR_TYPE, "model '%s' version %lld returns a %s, not one "
                                "tensor", s->name.c_str(), (long long)v.number,
                                result.tagKind().c_str());
    at::Tensor out = result.toTensor().to(at::kCPU, at::kFloat);
    if (out.dim() > SIMAI_MAX_NDIM)
        return simai_torch_fail(SIMAI_ERR_TYPE, "the model's output has %lld dimensions",
                                (long long)out.dim());
    *y_ndim = (int)out.dim();
    for (int i = 0; i < *y_ndim; i++)
        y_shape[i] = (uint64_t)out.size(i);
    if ((size_t)out.numel() > cap)
        return simai_torch_fail(SIMAI_ERR_TOO_SMALL, "the model's output has %lld floats, the "
                                "buffer room for %zu", (long long)out.numel(), cap);
    std::vector<int64_t> out_sizes(out.sizes().begin(), out.sizes().end());
    at::from_blob(y, out_sizes, strides_of(out_sizes, column_major),
                  at::TensorOptions().dtype(at::kFloat))
        .copy_(out);
    return SIMAI_OK;
}

// SIMAI_OK if ndim, shape and the buffers make a batch, else SIMAI_ERR_INVALID.
int check_batch(int ndim, const uint64_t *shape, const float *x, const float *y, size_t cap,
                const int *y_ndim, const uint64_t *y_shape)
{
    if (ndim < 0 || ndim > SIMAI_MAX_NDIM || (ndim > 0 && shape == nullptr))
        return simai_torch_fail(SIMAI_ERR_INVALID, "a batch needs 0 to %d extents in shape",
                                SIMAI_MAX_NDIM);
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] > (uint64_t)INT64_MAX)
            return simai_torch_fail(SIMAI_ERR_INVALID, "extent %d is too large", i);
        n *= shape[i];
    }
    if ((n > 0 && x == nullptr) || (cap > 0 && y == nullptr) || !y_ndim || !y_shape)
        return simai_torch_fail(SIMAI_ERR_INVALID, "x, y, y_ndim and y_shape must not be NULL");
    return SIMAI_OK;
}

} // namespace

extern "C" {

SIMAI_API int simai_surrogate_open(simai_store *store, const char *name, double poll,
                                   int trusted, simai_surrogate **surrogate)
{
    if (surrogate)
        *surrogate = nullptr;
    if (!store || !surrogate)
        return simai_torch_fail(SIMAI_ERR_INVALID, "store and surrogate must not be NULL");
    int rc = simai_torch_check_name(name);
    if (rc != SIMAI_OK)
        return rc;
    if (!(poll >= 0))
        return simai_torch_fail(SIMAI_ERR_INVALID, "poll must be >= 0 seconds, not %g", poll);
    if (!trusted)
        return simai_torch_fail(SIMAI_ERR_PERMISSION, "model '%s' would be loaded from "
                                "TorchScript, and loading it runs code stored with it: pass "
                                "trusted=1 if you trust whoever can write %s", name,
                                simai_url(store));
    return guarded("simai_surrogate_open", [&]() -> int {
        auto *s = new simai_surrogate();
        s->store = store;
        s->name = name;
        s->poll = poll;
        *surrogate = s;
        return SIMAI_OK;
    });
}

SIMAI_API int simai_surrogate_close(simai_surrogate *surrogate)
{
    delete surrogate;
    return SIMAI_OK;
}

SIMAI_API int simai_surrogate_refresh(simai_surrogate *surrogate, int *swapped)
{
    if (swapped)
        *swapped = 0;
    if (!surrogate)
        return simai_torch_fail(SIMAI_ERR_INVALID, "surrogate must not be NULL");
    return guarded("simai_surrogate_refresh", [&]() -> int {
        std::lock_guard<std::mutex> lock(surrogate->loading);
        return refresh(surrogate, swapped);
    });
}

SIMAI_API int simai_surrogate_version(simai_surrogate *surrogate, int64_t *version)
{
    if (!surrogate || !version)
        return simai_torch_fail(SIMAI_ERR_INVALID, "surrogate and version must not be NULL");
    auto v = held(surrogate);
    *version = v ? v->number : 0;
    return SIMAI_OK;
}

SIMAI_API int simai_surrogate_wait(simai_surrogate *surrogate, double timeout,
                                   int64_t *version)
{
    if (!surrogate)
        return simai_torch_fail(SIMAI_ERR_INVALID, "surrogate must not be NULL");
    return guarded("simai_surrogate_wait", [&]() -> int {
        auto deadline = after(timeout);
        std::string latest = "models/" + surrogate->name + "/latest";
        for (;;) {
            double left = -1;
            if (timeout >= 0)
                left = std::max(0.0, std::chrono::duration<double>(deadline - Clock::now())
                                         .count());
            int rc = simai_wait(surrogate->store, latest.c_str(), left);
            if (rc == SIMAI_OK) {
                std::lock_guard<std::mutex> lock(surrogate->loading);
                rc = refresh(surrogate, nullptr);
            } else {
                rc = simai_torch_fail_simai(rc, "no version of model '%s'",
                                            surrogate->name.c_str());
            }
            auto v = held(surrogate);
            if (v) {
                if (version)
                    *version = v->number;
                return SIMAI_OK;
            }
            if (rc != SIMAI_OK)
                return rc;
            if (timeout >= 0 && Clock::now() >= deadline)
                return simai_torch_fail(SIMAI_ERR_TIMEOUT, "no loadable version of model '%s' "
                                        "in %g s", surrogate->name.c_str(), timeout);
            std::this_thread::sleep_for(std::chrono::milliseconds(50)); // pruned: look again
        }
    });
}

SIMAI_API int simai_surrogate_run(simai_surrogate *surrogate, int ndim, const uint64_t *shape,
                                  const float *x, float *y, size_t cap, int *y_ndim,
                                  uint64_t *y_shape, int flags, int64_t *version)
{
    if (!surrogate)
        return simai_torch_fail(SIMAI_ERR_INVALID, "surrogate must not be NULL");
    int rc = check_batch(ndim, shape, x, y, cap, y_ndim, y_shape);
    if (rc != SIMAI_OK)
        return rc;
    return guarded("simai_surrogate_run", [&]() -> int {
        bool due;
        {
            std::lock_guard<std::mutex> lock(surrogate->state);
            due = Clock::now() >= surrogate->next_check;
        }
        int checked = SIMAI_OK;
        // a call that holds a version never waits for another thread's load: it runs that one
        std::unique_lock<std::mutex> loading(surrogate->loading, std::defer_lock);
        if (due && held(surrogate))
            loading.try_lock();
        else if (due)
            loading.lock();
        if (loading.owns_lock()) {
            checked = refresh(surrogate, nullptr);
            loading.unlock();
        }
        auto v = held(surrogate);
        if (!v) {
            if (checked != SIMAI_OK)
                return checked;
            return simai_torch_fail(SIMAI_ERR_NOT_FOUND, "no loadable version of model '%s' "
                                    "is published yet in %s; call simai_surrogate_wait first",
                                    surrogate->name.c_str(), simai_url(surrogate->store));
        }
        int ran = run(surrogate, *v, ndim, shape, x, y, cap, y_ndim, y_shape,
                      flags & SIMAI_COLUMN_MAJOR);
        if (ran == SIMAI_OK && version)
            *version = v->number;
        return ran;
    });
}

} // extern "C"
