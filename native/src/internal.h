/* The handles behind the opaque types of simai.h. */
#ifndef SIMAI_INTERNAL_H
#define SIMAI_INTERNAL_H

#include "env.h"
#include "simai.h"

struct simai_backend;

/* Room after the URL for the "user@" that redis:// adds from $SIMAI_STORE_USER. */
#define SIMAI_URL_SPARE 256

struct simai_store {
    const struct simai_backend *ops;
    struct simai_env *env; /* local:// */
    void *impl;            /* file:// and redis://: the backend's state */
    char url[];            /* as opened (without a password), for messages */
};

/* A local zero-copy view pins its read transaction: a snapshot whose pages LMDB does not
 * reuse. A file or redis view owns the entry it read instead. */
struct simai_view {
    MDB_txn *txn;
    struct simai_env *env;
    void *owned;
};

/* Check the handle and the store (not destroyed); SIMAI_ERR_INVALID for NULL. */
int simai_usable(simai_store *s);

#endif
