/* The handles behind the opaque types of simai.h. */
#ifndef SIMAI_INTERNAL_H
#define SIMAI_INTERNAL_H

#include "env.h"
#include "simai.h"

struct simai_store {
    struct simai_env *env;
    char url[]; /* as opened, for messages */
};

/* A zero-copy view pins its read transaction: a snapshot whose pages LMDB does not reuse. */
struct simai_view {
    MDB_txn *txn;
    struct simai_env *env;
};

/* Check the handle and the store (not destroyed); SIMAI_ERR_INVALID for NULL. */
int simai_usable(simai_store *s);

#endif
