/* test_pretokenizer_oom.c — an out-of-memory inside PCRE2's regex compile is
 * reported as LRUN_E_OOM, not as an internal error (issue 16).
 *
 * The test defines pcre2_compile_8 itself: the executable's definition takes
 * precedence over libpcre2's for the library objects linked in (liblrun.a),
 * so the test decides when the compile fails the way PCRE2 reports its own
 * allocation failures (PCRE2_ERROR_HEAP_FAILED); otherwise it forwards to
 * the real one (dlsym RTLD_NEXT). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "check.h"
#include "lrun.h"
#include "text/pretokenizer.h"

#include <dlfcn.h>
#include <pcre2.h>
#include <string.h>

static int fail_compiles; /* > 0: the next compile fails for lack of memory */

pcre2_code *pcre2_compile_8(PCRE2_SPTR pattern, PCRE2_SIZE length, uint32_t options, int *errorcode,
                            PCRE2_SIZE *erroroffset, pcre2_compile_context *ccontext)
{
    if (fail_compiles > 0) {
        fail_compiles--;
        *errorcode = PCRE2_ERROR_HEAP_FAILED;
        *erroroffset = 0;
        return NULL;
    }
    typedef pcre2_code *(*compile_fn)(PCRE2_SPTR, PCRE2_SIZE, uint32_t, int *, PCRE2_SIZE *, pcre2_compile_context *);
    compile_fn real;
    void *sym = dlsym(RTLD_NEXT, "pcre2_compile_8");
    memcpy(&real, &sym, sizeof real);
    if (!real) {
        *errorcode = PCRE2_ERROR_HEAP_FAILED;
        return NULL;
    }
    return real(pattern, length, options, errorcode, erroroffset, ccontext);
}

int main(void)
{
    lrun_pretokenizer *p = NULL;
    lrun_pre_info info;
    static const char pre[] = "llama-bpe";
    lrun_status st = lrun_pretokenizer_init(&p, pre, strlen(pre), &info);
    CHECK("the llama-bpe pre-tokenizer compiles", st == LRUN_OK && p != NULL);
    lrun_pretokenizer_free(p);
    p = NULL;

    fail_compiles = 1;
    st = lrun_pretokenizer_init(&p, pre, strlen(pre), &info);
    printf("# %s: %s\n", lrun_status_name(st), lrun_last_error());
    CHECK("PCRE2 out of memory while compiling: LRUN_E_OOM, nothing returned", st == LRUN_E_OOM && p == NULL);
    CHECK("the message says the regex and memory", strstr(lrun_last_error(), "regex") != NULL &&
                                                     strstr(lrun_last_error(), "memory") != NULL);
    fail_compiles = 0;
    return CHECK_DONE();
}
