// simai_torch.hpp: the C++17 face of libsimai_torch (simai_torch.h): an RAII surrogate handle,
// exceptions that carry the code and message, and calls on std::vector or pointers + shape
// that report the version that answered.
//
//   simai::store s;                                          // simai.hpp
//   simai::surrogate model(s, "sine", 1.0, true);           // poll s, trusted
//   model.wait(60.0);                                        // a first version is loaded
//   simai::prediction p = model.run(x, {256, 2});           // p.y, p.shape, p.version
//
// Header-only over libsimai_torch; the thread-safety rules are simai_torch.h's: one surrogate
// may be called from many threads at once, and the store must outlive it.
#ifndef SIMAI_TORCH_HPP
#define SIMAI_TORCH_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "simai.hpp"
#include "simai_torch.h"

namespace simai {

// A failed libsimai_torch call as a simai::error: its code and this thread's message.
inline void check_torch(int rc)
{
    if (rc != SIMAI_OK)
        throw error(rc, std::string(simai_code_name(rc)) + ": " + simai_torch_last_error());
}

// What one call answered: y (row-major, or column-major when asked), its shape, and the
// version of the model that computed it.
struct prediction {
    std::vector<float> y;
    shape_t shape;
    std::int64_t version = 0;
};

class surrogate {
  public:
    // A surrogate of model `name` in `s`, checking for newer versions at most every `poll`
    // seconds (0: on every call). Loading TorchScript runs code stored with the model:
    // `trusted` must be true (else SIMAI_ERR_PERMISSION), so pass it only if you trust
    // whoever can write the store. Nothing is loaded before the first call or wait().
    surrogate(store &s, const std::string &name, double poll, bool trusted)
        : surrogate(s.handle(), name, poll, trusted)
    {
    }
    surrogate(simai_store *s, const std::string &name, double poll, bool trusted)
    {
        check_torch(simai_surrogate_open(s, name.c_str(), poll, trusted ? 1 : 0, &m_));
    }
    surrogate(surrogate &&o) noexcept
        : m_(std::exchange(o.m_, nullptr)), expect_(o.expect_.load())
    {
    }
    surrogate &operator=(surrogate &&o) noexcept
    {
        std::swap(m_, o.m_);
        expect_ = o.expect_.load();
        return *this;
    }
    surrogate(const surrogate &) = delete;
    surrogate &operator=(const surrogate &) = delete;
    ~surrogate() { simai_surrogate_close(m_); }

    simai_surrogate *handle() const { return m_; }

    // Block until a version is published and loaded; its number. Throws SIMAI_ERR_TIMEOUT
    // after `timeout` s (< 0: no limit).
    std::int64_t wait(double timeout = -1)
    {
        std::int64_t v = 0;
        check_torch(simai_surrogate_wait(m_, timeout, &v));
        return v;
    }
    // Check for a newer version now; whether one was swapped in. Throws why a newer version
    // could not be loaded (the version held keeps answering).
    bool refresh()
    {
        int swapped = 0;
        check_torch(simai_surrogate_refresh(m_, &swapped));
        return swapped != 0;
    }
    // The version held (0 before the first).
    std::int64_t version()
    {
        std::int64_t v = 0;
        check_torch(simai_surrogate_version(m_, &v));
        return v;
    }

    // y = model(x) for the float32 batch x of `shape` (row-major; column-major with
    // SIMAI_COLUMN_MAJOR, y then too), into the caller's `cap` floats. Returns the version
    // that answered; *y_shape (optional) gets the output's shape, also when SIMAI_ERR_TOO_SMALL
    // is thrown.
    std::int64_t run(const float *x, const shape_t &shape, float *y, std::size_t cap,
                     shape_t *y_shape = nullptr, int flags = 0)
    {
        std::uint64_t out[SIMAI_MAX_NDIM];
        std::int64_t v = 0;
        int ndim = 0;
        int rc = simai_surrogate_run(m_, int(shape.size()), shape.data(), x, y, cap, &ndim, out,
                                     flags, &v);
        if (y_shape && (rc == SIMAI_OK || rc == SIMAI_ERR_TOO_SMALL))
            y_shape->assign(out, out + ndim);
        check_torch(rc);
        return v;
    }
    // y = model(x), allocated here: the output, its shape and the version that answered.
    prediction run(const float *x, const shape_t &shape, int flags = 0)
    {
        prediction p;
        p.y.resize(expect_.load(std::memory_order_relaxed));
        for (;;) {
            std::uint64_t out[SIMAI_MAX_NDIM];
            int ndim = 0;
            int rc = simai_surrogate_run(m_, int(shape.size()), shape.data(), x, p.y.data(),
                                         p.y.size(), &ndim, out, flags, &p.version);
            if (rc == SIMAI_OK || rc == SIMAI_ERR_TOO_SMALL) {
                std::size_t n = 1;
                for (int d = 0; d < ndim; d++)
                    n *= std::size_t(out[d]);
                p.shape.assign(out, out + ndim);
                if (rc == SIMAI_ERR_TOO_SMALL && n > p.y.size()) { // again, with room for it
                    p.y.resize(n);
                    continue;
                }
                if (rc == SIMAI_OK) {
                    p.y.resize(n);
                    expect_.store(n, std::memory_order_relaxed);
                    return p;
                }
            }
            check_torch(rc);
        }
    }
    prediction run(const std::vector<float> &x, const shape_t &shape, int flags = 0)
    {
        std::size_t n = 1;
        for (auto e : shape)
            n *= std::size_t(e);
        if (n != x.size())
            throw error(SIMAI_ERR_INVALID, "SIMAI_ERR_INVALID: " + std::to_string(x.size()) +
                                               " floats do not make the batch shape given");
        return run(x.data(), shape, flags);
    }

  private:
    simai_surrogate *m_ = nullptr;
    std::atomic<std::size_t> expect_{0}; // the last output's size, to allocate first
};

} // namespace simai

#endif // SIMAI_TORCH_HPP
