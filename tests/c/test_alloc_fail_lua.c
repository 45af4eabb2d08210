/* test_alloc_fail_lua.c — allocation failures seen from Lua (issue 16): every
 * host allocation of lrun.load, model:generate and model:chat, driven from
 * the lrun Lua package, fails in turn, and each must come back as nil, err
 * (no Lua error, no "internal"), leak nothing, and leave a model loaded
 * before generating the same tokens.
 *
 * The program embeds LuaJIT (like tests/fuzz/fuzz_jinja.c) and links the
 * whole static library with the allocation wrappers of alloc_fail.h
 * (Makefile: -Wl,--wrap, --whole-archive, -Wl,-E), so the Lua package binds
 * to this program's own lrun_* symbols through ffi.C (lrun.config.lib =
 * false) and every allocation the library makes comes through the wrappers.
 * LuaJIT's own heap is its allocator's, not malloc's: only the library's
 * blocks are counted. The stepping is in tests/alloc_fail_lua.lua; it calls
 * back through the three functions below. Run from the repository root
 * (tests/run.sh does). LRUN_ALLOC_STRIDE=k tries every k-th allocation. */
#define ALLOC_FAIL_WRAPPERS_ONLY
#include "alloc_fail.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

/* The Lua driver's view of the wrappers (declared again in its ffi.cdef). */
void lrun_test_alloc_arm(long n);
long lrun_test_alloc_calls(void);
long lrun_test_alloc_live(void);

/* Counts from zero again; the nth allocation from now fails (0: none). */
void lrun_test_alloc_arm(long n)
{
    pthread_mutex_lock(&lock);
    calls = 0;
    fail_at = n;
    pthread_mutex_unlock(&lock);
}

/* Allocations seen since the last arm. */
long lrun_test_alloc_calls(void)
{
    pthread_mutex_lock(&lock);
    const long n = calls;
    pthread_mutex_unlock(&lock);
    return n;
}

/* Blocks the library holds that it took while tracking. */
long lrun_test_alloc_live(void)
{
    pthread_mutex_lock(&lock);
    const long n = n_live;
    pthread_mutex_unlock(&lock);
    return n;
}

/* package.loaded["lrun.config"]: the library is this program (lib = false),
 * the generated cdef.lua is in build's lua/ folder. */
static const char setup[] =
    "local build = ...\n"
    "package.path = './lua/?.lua;./lua/?/init.lua;' .. build .. '/lua/?.lua;' .. package.path\n"
    "package.loaded['lrun.config'] = { root = '.', build = build, lib = false, policies = {} }\n"
    "return dofile('tests/alloc_fail_lua.lua')";

int main(int argc, char **argv)
{
    (void)argc;
    /* build/tests/test_alloc_fail_lua → build */
    char build[512];
    snprintf(build, sizeof build, "%s", argv[0]);
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(build, '/');
        if (slash) *slash = '\0';
        else snprintf(build, sizeof build, ".");
    }
    live = __real_calloc(LIVE_CAP, sizeof *live);
    lua_State *L = luaL_newstate();
    if (!live || !L) {
        printf("not ok 1 - the test starts (no memory)\n1..1\n");
        return 1;
    }
    luaL_openlibs(L);
    tracking = 1; /* from here on, the blocks the library takes are counted */
    int failures = 1;
    if (luaL_loadstring(L, setup) != 0) {
        printf("not ok 1 - the driver loads: %s\n1..1\n", lua_tostring(L, -1));
    } else {
        lua_pushstring(L, build);
        if (lua_pcall(L, 1, 1, 0) != 0) printf("not ok 1 - the driver runs: %s\n1..1\n", lua_tostring(L, -1));
        else failures = (int)lua_tointeger(L, -1);
    }
    lua_close(L);
    tracking = 0;
    __real_free(live);
    return failures ? 1 : 0;
}
