// simai.hpp: the C++17 face of the C client (simai.h): an RAII store handle, exceptions that
// carry the code and message, and std::vector (std::span in C++20) overloads.
//
//   simai::store s;                                   // $SIMAI_STORE, else local://default
//   std::vector<double> field(nx * ny);
//   s.put("field/0", field, {nx, ny});                // shape (nx, ny), row-major
//   auto back = s.get<double>("field/0");             // simai::array<double>: .data, .shape
//   auto buf = s.get_alloc("field/0");                // simai::buffer, libsimai's memory
//   s.wait("model/ready", 30.0);                      // throws simai::error(SIMAI_ERR_TIMEOUT)
//   simai::group_reader<float> r(s, "samples", "trainer");
//   while (auto batch = r.next()) ...                 // each entry once, in order
//
// Header-only over libsimai; the thread-safety rules are simai.h's.
#ifndef SIMAI_HPP
#define SIMAI_HPP

#include <complex>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>
#if __cplusplus >= 202002L
#include <span>
#endif

#include "simai.h"

namespace simai {

// A failed call: code() is one of the SIMAI_ERR_* codes, what() its message.
class error : public std::runtime_error {
  public:
    error(int code, const std::string &message) : std::runtime_error(message), code_(code) {}
    int code() const noexcept { return code_; }

  private:
    int code_;
};

inline void check(int rc)
{
    if (rc != SIMAI_OK)
        throw error(rc, std::string(simai_code_name(rc)) + ": " + simai_last_error());
}

// The numpy type string of a C++ element type.
template <class T> struct dtype_of;
#define SIMAI_DTYPE_OF(T, S)                                                                  \
    template <> struct dtype_of<T> {                                                          \
        static constexpr const char *value = S;                                               \
    };
SIMAI_DTYPE_OF(bool, SIMAI_DTYPE_BOOL)
SIMAI_DTYPE_OF(std::int8_t, SIMAI_DTYPE_I8)
SIMAI_DTYPE_OF(std::uint8_t, SIMAI_DTYPE_U8)
SIMAI_DTYPE_OF(std::int16_t, SIMAI_DTYPE_I16)
SIMAI_DTYPE_OF(std::uint16_t, SIMAI_DTYPE_U16)
SIMAI_DTYPE_OF(std::int32_t, SIMAI_DTYPE_I32)
SIMAI_DTYPE_OF(std::uint32_t, SIMAI_DTYPE_U32)
SIMAI_DTYPE_OF(std::int64_t, SIMAI_DTYPE_I64)
SIMAI_DTYPE_OF(std::uint64_t, SIMAI_DTYPE_U64)
SIMAI_DTYPE_OF(float, SIMAI_DTYPE_F32)
SIMAI_DTYPE_OF(double, SIMAI_DTYPE_F64)
SIMAI_DTYPE_OF(std::complex<float>, SIMAI_DTYPE_C64)
SIMAI_DTYPE_OF(std::complex<double>, SIMAI_DTYPE_C128)
#undef SIMAI_DTYPE_OF

using shape_t = std::vector<std::uint64_t>;

// An array read back: its elements (row-major) and its shape.
template <class T> struct array {
    std::vector<T> data;
    shape_t shape;
};

// A zero-copy read: the payload in the store's mapping, valid while this object lives.
class view {
  public:
    view() = default;
    view(simai_view *v, const void *data, const simai_info &info)
        : v_(v), data_(data), info_(info)
    {
    }
    view(view &&o) noexcept : v_(std::exchange(o.v_, nullptr)), data_(o.data_), info_(o.info_)
    {
    }
    view &operator=(view &&o) noexcept
    {
        std::swap(v_, o.v_);
        data_ = o.data_;
        info_ = o.info_;
        return *this;
    }
    view(const view &) = delete;
    view &operator=(const view &) = delete;
    ~view() { simai_view_release(v_); }

    const simai_info &info() const { return info_; }
    std::size_t size_bytes() const { return static_cast<std::size_t>(info_.nbytes); }
    shape_t shape() const { return shape_t(info_.shape, info_.shape + info_.ndim); }
    // The elements as T; throws unless the value is an array of T. A payload of half a page
    // or less (2 KiB with 4 KiB pages) may start at any address: copy it where that matters.
    template <class T> const T *data() const
    {
        if (info_.kind != SIMAI_KIND_ARRAY || std::string(info_.dtype) != dtype_of<T>::value)
            throw error(SIMAI_ERR_TYPE, std::string("the view holds ") +
                                            (info_.kind == SIMAI_KIND_ARRAY ? info_.dtype
                                                                            : "no array") +
                                            ", not " + dtype_of<T>::value);
        return static_cast<const T *>(data_);
    }
    const void *bytes() const { return data_; }

  private:
    simai_view *v_ = nullptr;
    const void *data_ = nullptr;
    simai_info info_{};
};

// A value read into a buffer libsimai allocated (simai_get_alloc), freed when this object
// goes: large ones in transparent huge pages, as NumPy allocates Python's arrays. Move-only.
//
//   simai::buffer b = s.get_alloc("field/0");
//   const double *f = b.data<double>();               // throws unless an array of double
//   auto n = b.size<double>();                        // elements; b.shape(): its extents
class buffer {
  public:
    buffer() = default;
    buffer(void *data, const simai_info &info) : data_(data), info_(info) {}
    buffer(buffer &&o) noexcept : data_(std::exchange(o.data_, nullptr)), info_(o.info_) {}
    buffer &operator=(buffer &&o) noexcept
    {
        std::swap(data_, o.data_);
        std::swap(info_, o.info_);
        return *this;
    }
    buffer(const buffer &) = delete;
    buffer &operator=(const buffer &) = delete;
    ~buffer() { simai_free(data_); }

    const simai_info &info() const { return info_; }
    std::size_t size_bytes() const { return static_cast<std::size_t>(info_.nbytes); }
    shape_t shape() const { return shape_t(info_.shape, info_.shape + info_.ndim); }
    // The elements as T; throws unless the value is an array of T.
    template <class T> T *data()
    {
        require<T>();
        return static_cast<T *>(data_);
    }
    template <class T> const T *data() const
    {
        require<T>();
        return static_cast<const T *>(data_);
    }
    // The number of elements of T; throws unless the value is an array of T.
    template <class T> std::size_t size() const
    {
        require<T>();
        return size_bytes() / sizeof(T);
    }
    void *bytes() { return data_; }
    const void *bytes() const { return data_; }
    // Give up ownership: the caller frees the pointer with simai_free.
    void *release() noexcept { return std::exchange(data_, nullptr); }

  private:
    template <class T> void require() const
    {
        if (info_.kind != SIMAI_KIND_ARRAY || std::string(info_.dtype) != dtype_of<T>::value)
            throw error(SIMAI_ERR_TYPE, std::string("the buffer holds ") +
                                            (info_.kind == SIMAI_KIND_ARRAY ? info_.dtype
                                                                            : "no array") +
                                            ", not " + dtype_of<T>::value);
    }

    void *data_ = nullptr;
    simai_info info_{};
};

class store {
  public:
    // The run's store ($SIMAI_STORE), else local://default.
    store() { check(simai_open(&s_)); }
    explicit store(const std::string &url) { check(simai_open_url(url.c_str(), &s_)); }
    store(store &&o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    store &operator=(store &&o) noexcept
    {
        std::swap(s_, o.s_);
        return *this;
    }
    store(const store &) = delete;
    store &operator=(const store &) = delete;
    ~store() { simai_close(s_); }

    simai_store *handle() const { return s_; }
    std::string url() const { return simai_url(s_); }

    // --- values ---------------------------------------------------------------------------

    template <class T>
    void put(const std::string &key, const T *data, const shape_t &shape, int flags = 0)
    {
        check(simai_put_array(s_, key.c_str(), dtype_of<T>::value, int(shape.size()),
                              shape.data(), data, flags));
    }
    // A vector as an array of `shape` (default: one dimension, its size).
    template <class T>
    void put(const std::string &key, const std::vector<T> &data, shape_t shape = {})
    {
        if (shape.empty())
            shape = {data.size()};
        require_size(data.size(), shape);
        put(key, data.data(), shape);
    }
#if __cplusplus >= 202002L
    template <class T>
    void put(const std::string &key, std::span<const T> data, shape_t shape = {})
    {
        if (shape.empty())
            shape = {data.size()};
        require_size(data.size(), shape);
        put(key, data.data(), shape);
    }
#endif
    void put_bytes(const std::string &key, const void *data, std::size_t n)
    {
        check(simai_put_bytes(s_, key.c_str(), data, n));
    }
    void put_json(const std::string &key, const std::string &json)
    {
        check(simai_put_json(s_, key.c_str(), json.c_str()));
    }

    simai_info info(const std::string &key)
    {
        simai_info i;
        check(simai_info_get(s_, key.c_str(), &i));
        return i;
    }
    // An array of T (throws SIMAI_ERR_TYPE if the stored value is anything else).
    template <class T> array<T> get(const std::string &key)
    {
        static_assert(!std::is_same_v<T, bool>,
                      "std::vector<bool> packs bits: read bool arrays into a bool buffer");
        simai_info i = info(key);
        std::vector<T> data(elements(i));
        int rc;
        while ((rc = simai_get(s_, key.c_str(), data.data(), data.size() * sizeof(T), &i)) ==
               SIMAI_ERR_TOO_SMALL) // it grew since: again
            data.resize(std::size_t(i.nbytes) / sizeof(T) + 1);
        check(rc);
        if (i.kind != SIMAI_KIND_ARRAY || std::string(i.dtype) != dtype_of<T>::value)
            throw error(SIMAI_ERR_TYPE, "SIMAI_ERR_TYPE: key '" + key + "' holds " +
                                            (i.kind == SIMAI_KIND_ARRAY ? i.dtype : "no array") +
                                            ", not " + dtype_of<T>::value);
        data.resize(elements(i));
        return {std::move(data), shape_t(i.shape, i.shape + i.ndim)};
    }
    // Into a caller's buffer of exactly this shape.
    template <class T>
    void get(const std::string &key, T *out, const shape_t &shape, int flags = 0)
    {
        check(simai_get_array(s_, key.c_str(), dtype_of<T>::value, int(shape.size()),
                              shape.data(), out, flags));
    }
    std::vector<std::byte> get_bytes(const std::string &key)
    {
        std::vector<std::byte> out(std::size_t(info(key).nbytes));
        std::size_t n = 0;
        int rc;
        while ((rc = simai_get_bytes(s_, key.c_str(), out.data(), out.size(), &n)) ==
               SIMAI_ERR_TOO_SMALL)
            out.resize(n);
        check(rc);
        out.resize(n);
        return out;
    }
    std::string get_json(const std::string &key)
    {
        std::string out(std::size_t(info(key).nbytes) + 1, '\0');
        std::size_t n = 0;
        int rc;
        while ((rc = simai_get_json(s_, key.c_str(), out.data(), out.size(), &n)) ==
               SIMAI_ERR_TOO_SMALL)
            out.resize(n + 1);
        check(rc);
        out.resize(n);
        return out;
    }
    // Any kind of value in a new buffer libsimai allocates (simai_get_alloc).
    buffer get_alloc(const std::string &key)
    {
        void *data;
        simai_info i;
        check(simai_get_alloc(s_, key.c_str(), &data, &i));
        return buffer(data, i);
    }
    view get_view(const std::string &key)
    {
        simai_view *v;
        const void *data;
        simai_info i;
        check(simai_view_get(s_, key.c_str(), &v, &data, &i));
        return view(v, data, i);
    }

    bool exists(const std::string &key)
    {
        int e;
        check(simai_exists(s_, key.c_str(), &e));
        return e != 0;
    }
    // Delete `key`; whether it existed.
    bool remove(const std::string &key)
    {
        int existed;
        check(simai_delete(s_, key.c_str(), &existed));
        return existed != 0;
    }
    std::vector<std::string> keys(const std::string &prefix = "")
    {
        char **k;
        std::size_t n;
        check(simai_keys(s_, prefix.c_str(), &k, &n));
        std::vector<std::string> out(k, k + n);
        simai_free_keys(k, n);
        return out;
    }
    // Block until `key` exists; timeout < 0 waits without limit.
    void wait(const std::string &key, double timeout = -1)
    {
        check(simai_wait(s_, key.c_str(), timeout));
    }

    // --- streams --------------------------------------------------------------------------

    template <class T>
    std::int64_t append(const std::string &stream, const std::vector<T> &data,
                        shape_t shape = {}, double timeout = -1)
    {
        std::int64_t index;
        if (shape.empty())
            shape = {data.size()};
        require_size(data.size(), shape);
        check(simai_append_array(s_, stream.c_str(), dtype_of<T>::value, int(shape.size()),
                                 shape.data(), data.data(), 0, timeout, &index));
        return index;
    }
    // Entry `index` of a stream as a view, waiting up to `timeout` s for it.
    view stream_view(const std::string &stream, std::int64_t index, double timeout = -1)
    {
        simai_view *v;
        const void *data;
        simai_info i;
        check(simai_stream_view(s_, stream.c_str(), index, timeout, &v, &data, &i));
        return view(v, data, i);
    }
    simai_stream_state stream_info(const std::string &stream)
    {
        simai_stream_state st;
        check(simai_stream_info(s_, stream.c_str(), &st));
        return st;
    }
    void close_stream(const std::string &stream)
    {
        check(simai_stream_close(s_, stream.c_str()));
    }
    // Declare a stream's bounds before its first append (simai_stream_create): at most
    // `maxlen` values (0: unbounded), policy "block" or "drop_oldest".
    void create_stream(const std::string &stream, std::int64_t maxlen = 0,
                       const std::string &policy = "block")
    {
        check(simai_stream_create(s_, stream.c_str(), maxlen, policy.c_str()));
    }
    // Delete a stream, its bounds and its groups; whether there was one.
    bool delete_stream(const std::string &stream)
    {
        int existed;
        check(simai_stream_delete(s_, stream.c_str(), &existed));
        return existed != 0;
    }

    // --- consumer groups (Python: store.stream(name, group="...")) ------------------------

    // The index `group` reads next: its recorded position, 0 for a new group.
    std::int64_t group_position(const std::string &stream, const std::string &group)
    {
        std::int64_t index;
        check(simai_group_position(s_, stream.c_str(), group.c_str(), &index));
        return index;
    }
    // Entry `index` of a stream for `group`, an array of T (simai_group_get): first records
    // `index` as the group's position, acknowledging every entry before it; an entry a bound
    // trimmed is skipped, so `index` becomes the index of the entry read (pass index + 1 for
    // the next). std::nullopt once the producer closed the stream and every entry was read;
    // throws simai::error otherwise (SIMAI_ERR_TIMEOUT after `timeout` s, SIMAI_ERR_TYPE
    // for an entry that is not an array of T: it stays unread). `expect`: the bytes to
    // allocate first (an entry that does not fit is read again, into a buffer that does).
    template <class T>
    std::optional<array<T>> group_get(const std::string &stream, const std::string &group,
                                      std::int64_t &index, double timeout = -1,
                                      std::size_t expect = 0)
    {
        static_assert(!std::is_same_v<T, bool>,
                      "std::vector<bool> packs bits: read bool arrays through simai_group_get");
        std::vector<T> data(expect / sizeof(T) + 1);
        simai_info i;
        int rc;
        while ((rc = simai_group_get(s_, stream.c_str(), group.c_str(), &index, timeout,
                                     data.data(), data.size() * sizeof(T), &i)) ==
               SIMAI_ERR_TOO_SMALL) // the size is known now: again, into a buffer that fits
            data.resize(std::size_t(i.nbytes) / sizeof(T) + 1);
        if (rc == SIMAI_ERR_ENDED)
            return std::nullopt;
        check(rc);
        if (i.kind != SIMAI_KIND_ARRAY || std::string(i.dtype) != dtype_of<T>::value)
            throw error(SIMAI_ERR_TYPE, "SIMAI_ERR_TYPE: stream '" + stream + "' entry " +
                                            std::to_string(index) + " holds " +
                                            (i.kind == SIMAI_KIND_ARRAY ? i.dtype : "no array") +
                                            ", not " + dtype_of<T>::value);
        data.resize(elements(i));
        return array<T>{std::move(data), shape_t(i.shape, i.shape + i.ndim)};
    }

    // --- the store as a whole -------------------------------------------------------------

    // Delete the store and everything in it (simai_destroy; local:// and file:// stores).
    // Every later call on it throws SIMAI_ERR_CLOSED.
    void destroy() { check(simai_destroy(s_)); }

  private:
    static std::size_t elements(const simai_info &i)
    {
        std::size_t n = 1;
        for (int d = 0; d < i.ndim; d++)
            n *= std::size_t(i.shape[d]);
        return n;
    }
    static void require_size(std::size_t n, const shape_t &shape)
    {
        std::size_t want = 1;
        for (auto e : shape)
            want *= std::size_t(e);
        if (want != n)
            throw error(SIMAI_ERR_INVALID, "SIMAI_ERR_INVALID: " + std::to_string(n) +
                                               " elements do not make the shape given");
    }

    simai_store *s_ = nullptr;
};

// One consumer group's reader of a stream of T arrays (Python: store.stream(name,
// group=...)): resumes at the group's recorded position, reads each entry once, in order.
//
//   simai::group_reader<float> r(s, "samples", "trainer", 30.0);
//   while (auto batch = r.next())
//       train_on(batch->data, batch->shape);       // r.index(): the entry just read
//
// One reader per group at a time; it uses the store (which must outlive it) from one thread.
template <class T> class group_reader {
  public:
    group_reader(store &s, std::string stream, std::string group, double timeout = -1)
        : s_(&s), stream_(std::move(stream)), group_(std::move(group)), timeout_(timeout),
          next_(s.group_position(stream_, group_))
    {
    }
    // The next entry; std::nullopt once the stream was closed and every entry read.
    std::optional<array<T>> next()
    {
        std::int64_t i = next_;
        auto out = s_->group_get<T>(stream_, group_, i, timeout_, expect_);
        if (out) {
            expect_ = out->data.size() * sizeof(T);
            index_ = i;
            next_ = i + 1;
        }
        return out;
    }
    // The index of the entry last read (-1 before the first).
    std::int64_t index() const { return index_; }

  private:
    store *s_;
    std::string stream_, group_;
    double timeout_;
    std::int64_t next_, index_ = -1;
    std::size_t expect_ = 0;
};

} // namespace simai

#endif // SIMAI_HPP
