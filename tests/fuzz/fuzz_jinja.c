/* fuzz_jinja.c — libFuzzer target for the chat-template engine
 * (lua/lrun/jinja/, pure Lua run by LuaJIT): the input is a template,
 * compiled and rendered on a conversation by tests/fuzz/fuzz_jinja.lua. A
 * Lua error out of the engine, or an error it classes as "internal", aborts
 * (a finding); template errors (syntax, undefined, limit, raised) are the
 * engine working. Run from the repository root (make fuzz does), so that
 * lua/ is found. LuaJIT itself is not instrumented: the coverage is the
 * harness's, so this target finds errors and hangs, not new paths. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static lua_State *L;
static int fuzz_ref = LUA_NOREF;

static void setup(void)
{
    L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    if (luaL_dostring(L, "package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path\n"
                         "return dofile('tests/fuzz/fuzz_jinja.lua')") != 0) {
        fprintf(stderr, "fuzz_jinja: setup: %s\n", lua_tostring(L, -1));
        abort();
    }
    fuzz_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L) setup();
    lua_rawgeti(L, LUA_REGISTRYINDEX, fuzz_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        fprintf(stderr, "fuzz_jinja: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
