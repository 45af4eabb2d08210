/* model_guard.c — a model's files in the mapping guard (model_guard.h). */
#include "model/model_guard.h"

#include <string.h>
#include <sys/stat.h>

#include "core/mapguard.h"
#include "model/model.h"
#include "packed/packed_file.h"

lrun_status lrun_model_check_file(const lrun_model *m, const char *who)
{
    if (!lrun_mapguard_any_lost()) return LRUN_OK; /* every step comes here: one atomic load */
    if (m && m->packed_file) return lrun_mapguard_check_map(m->packed_file->map, who); /* its tensors' mapping */
    const char *p = m ? m->weights_path : NULL; /* NULL: no weights in a file mapping */
    if (!p) return LRUN_OK;
    size_t n = strlen(p);
    /* an HF model: its shards lie in the directory given, or beside the
     * file given (a .safetensors or the index) */
    struct stat sb;
    if (m->st && !(stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))) {
        const char *slash = strrchr(p, '/');
        if (slash) n = (size_t)(slash - p);
    }
    while (n > 1 && p[n - 1] == '/') n--;
    return lrun_mapguard_check(p, n, who);
}
