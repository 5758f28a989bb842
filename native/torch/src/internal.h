/* What the files of libsimai_torch share: error recording and reading the model registry. */
#ifndef SIMAI_TORCH_INTERNAL_H
#define SIMAI_TORCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "simai_torch.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SIMAI_TORCH_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SIMAI_TORCH_PRINTF(a, b)
#endif

/* error.c: record `code` and the formatted message for this thread; returns `code`. */
int simai_torch_fail(int code, const char *fmt, ...) SIMAI_TORCH_PRINTF(2, 3);
/* The same, ending the message with libsimai's message of the call that failed. */
int simai_torch_fail_simai(int code, const char *fmt, ...) SIMAI_TORCH_PRINTF(2, 3);

/* registry.c: SIMAI_OK if `name` can name a model, else SIMAI_ERR_INVALID saying why. */
int simai_torch_check_name(const char *name);
/* The version models/<name>/latest names (SIMAI_ERR_NOT_FOUND: none published yet) and
 * whether it is TorchScript. */
int simai_torch_latest(simai_store *store, const char *name, int64_t *version,
                       int *torchscript);
/* The bytes of version `version` (*data malloc'ed, freed by the caller); SIMAI_ERR_NOT_FOUND
 * when a newer version pruned it. */
int simai_torch_read(simai_store *store, const char *name, int64_t version, char **data,
                     size_t *n);

#ifdef __cplusplus
}
#endif

#endif
