/* role_fixture.h — which tensor roles the placement tests move as a block's
 * matrices (attention and dense FFN projections; not norms, biases, the
 * embedding or the head), shared by disk_fixture.h and stream_fixture.h. */
#ifndef LRUN_TEST_ROLE_FIXTURE_H
#define LRUN_TEST_ROLE_FIXTURE_H

#include "lrun.h"

static inline int fixture_is_block_matrix(lrun_role r)
{
    return r == LRUN_ROLE_ATTN_Q || r == LRUN_ROLE_ATTN_K || r == LRUN_ROLE_ATTN_V || r == LRUN_ROLE_ATTN_OUTPUT ||
           r == LRUN_ROLE_FFN_GATE || r == LRUN_ROLE_FFN_UP || r == LRUN_ROLE_FFN_DOWN;
}

#endif
