/* simai_torch.h: surrogates in the simulation's own process (libsimai_torch, a C ABI).
 *
 * A simai_surrogate runs the newest TorchScript version of a model from the run's model
 * registry (models/<name>/... in a store opened with libsimai) through LibTorch, and swaps in
 * newer versions while the caller keeps calling, as Python's simai.Surrogate does:
 *
 *   - at most every `poll` seconds a call first reads the small models/<name>/latest pointer;
 *     when it names a newer version, that version is read and loaded in full, and only then
 *     swapped in: every call runs one whole version, the new one or the previous one;
 *   - each call reports the version that answered; versions only go up;
 *   - a version that cannot be loaded (not TorchScript, damaged) is skipped for good, and the
 *     version held keeps answering; simai_surrogate_refresh reports why it was skipped.
 *
 * Trust: loading TorchScript runs code stored with the model, so simai_surrogate_open
 * refuses (SIMAI_ERR_PERMISSION) unless `trusted` is nonzero: pass it only if you trust
 * whoever can write the store (for a store only you can open, your own runs' processes).
 *
 * Batches are float32 arrays of any shape, row-major, or column-major with SIMAI_COLUMN_MAJOR
 * (then a Fortran x(n, k) is the batch of shape (n, k) that Python's model sees, as in the
 * store). A model whose parameters are another floating type gets the batch converted to it,
 * and its output converted back to float32. The model runs on the CPU, without gradients.
 *
 * Errors: codes of simai.h; simai_torch_last_error() is the message of this thread's last
 * failing call in this library (messages of libsimai calls made inside are copied into it).
 * LibTorch exceptions become codes: a version LibTorch cannot load is SIMAI_ERR_CORRUPT, a
 * batch the model refuses is SIMAI_ERR_INVALID. Nothing aborts the caller.
 *
 * Thread safety: one simai_surrogate may be called from many threads at once (a swap waits
 * for no call; a call runs the version it started with). simai_surrogate_close must not race
 * with other calls on it. The store must stay open while surrogates made from it live.
 */
#ifndef SIMAI_TORCH_H
#define SIMAI_TORCH_H

#include <stddef.h>
#include <stdint.h>

#include "simai.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct simai_surrogate simai_surrogate;

/* The message of this thread's last failing call in libsimai_torch ("" if none). */
SIMAI_API const char *simai_torch_last_error(void);

/* A surrogate for model `name` of `store` (which must outlive it), checking for newer versions
 * at most every `poll` seconds (0: on every call). Nothing is loaded yet: the first call, or
 * simai_surrogate_wait, loads the newest version. SIMAI_ERR_PERMISSION unless `trusted`. */
SIMAI_API int simai_surrogate_open(simai_store *store, const char *name, double poll,
                                   int trusted, simai_surrogate **surrogate);
/* Let go of the surrogate and the model it holds (NULL does nothing). */
SIMAI_API int simai_surrogate_close(simai_surrogate *surrogate);

/* Block until a version is published and loaded; *version (optional) is its number.
 * SIMAI_ERR_TIMEOUT after `timeout` seconds (< 0: no limit). */
SIMAI_API int simai_surrogate_wait(simai_surrogate *surrogate, double timeout,
                                   int64_t *version);
/* Check the latest pointer now and swap in a newer version; *swapped (optional) is 1 if it
 * did. A newer version that cannot be loaded is an error here; one that is not TorchScript
 * (SIMAI_ERR_UNSUPPORTED) or that LibTorch cannot load (SIMAI_ERR_CORRUPT) is skipped from
 * then on, while a failure to read the store is retried at the next check. */
SIMAI_API int simai_surrogate_refresh(simai_surrogate *surrogate, int *swapped);
/* The version held now (0 before the first is loaded). */
SIMAI_API int simai_surrogate_version(simai_surrogate *surrogate, int64_t *version);

/* Run the model on the batch x (ndim extents in shape) and write its output into y, `cap`
 * floats. *y_ndim and y_shape (SIMAI_MAX_NDIM extents) get the output's shape, also on
 * SIMAI_ERR_TOO_SMALL; *version (optional) the version that answered. flags: 0 or
 * SIMAI_COLUMN_MAJOR (x and y both column-major). SIMAI_ERR_NOT_FOUND when no version was
 * published yet (see simai_surrogate_wait). When a check for a newer version fails, the
 * version held answers (simai_surrogate_refresh says why). */
SIMAI_API int simai_surrogate_run(simai_surrogate *surrogate, int ndim, const uint64_t *shape,
                                  const float *x, float *y, size_t cap, int *y_ndim,
                                  uint64_t *y_shape, int flags, int64_t *version);

#ifdef __cplusplus
}
#endif

#endif /* SIMAI_TORCH_H */
