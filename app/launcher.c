/* launcher.c — the `lrun` executable: LuaJIT with the lrun package on its path.
 *
 *   lrun [options] [script.lua [args…]]
 *
 * The C side only does what Lua cannot do for itself: find the checkout
 * (from /proc/self/exe), set package.path, hand the options to Lua as
 * package.loaded["lrun.config"], build `arg` exactly as luajit does, run
 * chunks with a traceback, and let Ctrl-C interrupt a running chunk.
 * Everything else (size parsing, the REPL) is Lua, so it can be tested
 * and changed without recompiling.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <luajit.h>

#include "sigbus.h"

#define MAX_POLICIES 64
#define MAX_CHUNKS 64
#define MAX_OVERRIDES 64

/* ---------------------------------------------------------------- options */

typedef struct options {
    const char *policies[MAX_POLICIES]; /* --policy files, in order */
    int n_policies;
    const char *chunks[MAX_CHUNKS];     /* -e code, in order */
    int n_chunks;
    const char *device;                 /* --device, NULL = the library's default */
    const char *gpu_budget;             /* --gpu-budget text, parsed by lrun.size */
    const char *host_budget;            /* --host-budget text, parsed by lrun.size */
    double cpu_offload_gb;              /* --cpu-offload-gb; < 0 = not given */
    int smart_offload;                  /* --smart-offload */
    long prefetch;                      /* --prefetch K; -1 = not given */
    const char *overrides[MAX_OVERRIDES]; /* -ot PATTERN=TIER, in order */
    int n_overrides;
    long threads;                       /* -t; -1 = not given */
    int interactive;                    /* -i */
    int version;                        /* -v */
    int help;                           /* -h */
    int script;                         /* argv index of the script, or argc when none */
    int generate;                       /* llama-cli's form (`lrun -m MODEL -p TEXT ...`): argv from
                                           o.script on are the generate command line's words */
} options;

static const char *progname = "lrun";

static void print_usage(FILE *f) {
    fprintf(f,
            "usage: %s [options] [script.lua [args...]]\n"
            "       %s [options] MODEL -p TEXT [generate flags]   (or -m MODEL, as llama-cli; docs/cli.md)\n"
            "  --policy FILE      load a placement policy (repeatable)\n"
            "  --device SPEC      compute device: cpu, cuda, cuda:N\n"
            "  --gpu-budget SIZE  cap on device memory: 512M, 4G, 4GiB, 1.5G\n"
            "  --host-budget SIZE cap on host memory lrun holds; weights beyond it are read from disk\n"
            "  --cpu-offload-gb N keep N GiB of weights off the device\n"
            "  --smart-offload    choose the offloaded weights with the smart policy\n"
            "  -ot PATTERN=TIER   place matching tensors: device, pinned, host, mmap, cpu (repeatable)\n"
            "  --prefetch K       streamed layers copied ahead of compute (default: 2 on cpu, 1 on cuda)\n"
            "  -t, --threads N    CPU threads (0 = all cores)\n"
            "  -e CODE            run CODE (repeatable, in order)\n"
            "  -i                 enter the REPL after the script\n"
            "  -v, --version      print the version and exit\n"
            "  -h, --help         print this help and exit\n"
            "  --                 stop handling options\n"
            "  -                  read the script from stdin\n"
            "With no script and no -e, lrun starts the REPL.\n"
            "Commands (a first word that is no file): lrun pack [-t N] IN.gguf OUT.lrpk,\n"
            "  lrun unpack [-t N] IN.lrpk OUT.gguf (packed bf16/f16 weights: docs/packed.md)\n",
            progname, progname);
}

static int usage_error(const char *fmt, const char *what) {
    fprintf(stderr, "%s: ", progname);
    fprintf(stderr, fmt, what);
    fprintf(stderr, " (try '%s --help')\n", progname);
    return -1;
}

/* Splits "--name=value" forms and fetches the value of an option that takes
 * one, from the same word or the next. Returns NULL (after a message) when
 * it is missing. */
static const char *option_value(int argc, char **argv, int *i, const char *inline_value) {
    if (inline_value) return inline_value;
    if (*i + 1 >= argc) {
        usage_error("option '%s' needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

/* The policies --policy takes by name (policies/<name>.lua). */
static int is_builtin_policy(const char *name) {
    static const char *const names[] = {"conservative", "aggressive", "layers", "smart"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0) return 1;
    return 0;
}

/* Whether argv from i on names a model with -m/--model, as llama-cli's
 * command lines do: then the words from i on are lrun.cli_generate's. */
static int names_model(int argc, char **argv, int i) {
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) return 0;
        if (strcmp(argv[i], "-m") == 0 || strcmp(argv[i], "--model") == 0 || strncmp(argv[i], "--model=", 8) == 0)
            return 1;
    }
    return 0;
}

/* Returns 0, or -1 after printing what was wrong. */
static int parse_options(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->threads = -1;
    o->cpu_offload_gb = -1;
    o->prefetch = -1;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || strcmp(a, "-") == 0) break; /* the script */
        if (strcmp(a, "--") == 0) { i++; break; }

        /* "--opt=value": compare the name part only. */
        char name[64];
        const char *inline_value = NULL;
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
        if (name_len >= sizeof name) return usage_error("unknown option '%s'", a);
        memcpy(name, a, name_len);
        name[name_len] = '\0';
        if (eq) inline_value = eq + 1;

        const char *v;
        if (strcmp(name, "--policy") == 0) {
            if (!(v = option_value(argc, argv, &i, inline_value))) return -1;
            if (o->n_policies == MAX_POLICIES) return usage_error("too many --policy files (%s)", v);
            struct stat st;
            if (is_builtin_policy(v) && stat(v, &st) != 0) {
                o->policies[o->n_policies++] = v; /* a name: lrun.residency resolves it */
                continue;
            }
            if (stat(v, &st) != 0) {
                fprintf(stderr, "%s: --policy %s: %s (expected conservative, aggressive, layers, smart or a .lua file)\n",
                        progname, v, strerror(errno));
                return -1;
            }
            if (!S_ISREG(st.st_mode) || access(v, R_OK) != 0) {
                fprintf(stderr, "%s: --policy %s: not a readable file\n", progname, v);
                return -1;
            }
            o->policies[o->n_policies++] = v;
        } else if (strcmp(name, "--device") == 0) {
            if (!(v = option_value(argc, argv, &i, inline_value))) return -1;
            o->device = v;
        } else if (strcmp(name, "--gpu-budget") == 0) {
            if (!(v = option_value(argc, argv, &i, inline_value))) return -1;
            o->gpu_budget = v;
        } else if (strcmp(name, "--host-budget") == 0) {
            if (!(v = option_value(argc, argv, &i, inline_value))) return -1;
            o->host_budget = v;
        } else if (strcmp(name, "-t") == 0 || strcmp(name, "--threads") == 0) {
            if (!(v = option_value(argc, argv, &i, inline_value))) return -1;
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (errno || end == v || *end || n < 0 || n > 4096) {
                fprintf(stderr, "%s: %s: expected a thread count from 0 to 4096, got '%s'\n", progname, name, v);
                return -1;
            }
            o->threads = n;
        } else if (strcmp(name, "--cpu-offload-gb") == 0) {
            if (!(v = option_value(argc, argv, &i, inline_value))) return -1;
            char *end;
            errno = 0;
            double n = strtod(v, &end);
            if (errno || end == v || *end || !(n >= 0) || n > 1e6) {
                fprintf(stderr, "%s: --cpu-offload-gb: expected a number of GiB >= 0, got '%s'\n", progname, v);
                return -1;
            }
            o->cpu_offload_gb = n;
        } else if (strcmp(a, "--smart-offload") == 0) {
            o->smart_offload = 1;
        } else if (strcmp(name, "--prefetch") == 0) {
            if (!(v = option_value(argc, argv, &i, inline_value))) return -1;
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (errno || end == v || *end || n < 1 || n > 64) {
                fprintf(stderr, "%s: --prefetch: expected a layer count from 1 to 64, got '%s'\n", progname, v);
                return -1;
            }
            o->prefetch = n;
        } else if (strcmp(name, "-ot") == 0 || strcmp(name, "--override-tensor") == 0) {
            if (!(v = option_value(argc, argv, &i, inline_value))) return -1;
            if (o->n_overrides == MAX_OVERRIDES) return usage_error("too many -ot overrides (%s)", v);
            o->overrides[o->n_overrides++] = v; /* checked by lrun.residency when a model loads */
        } else if (strcmp(name, "-e") == 0) {
            if (!(v = option_value(argc, argv, &i, NULL))) return -1;
            if (o->n_chunks == MAX_CHUNKS) return usage_error("too many -e chunks (%s)", v);
            o->chunks[o->n_chunks++] = v;
        } else if (strcmp(a, "-i") == 0) {
            o->interactive = 1;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
            o->version = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = 1;
        } else if (names_model(argc, argv, i)) {
            o->generate = 1; /* a flag of the generate command line: lrun.cli_generate checks them all */
            break;
        } else {
            return usage_error("unknown option '%s'", a);
        }
    }
    o->script = i;
    return 0;
}

/* ---------------------------------------------------------------- paths */

/* The checkout's root and the build directory: the launcher lives in
 * <root>/<build>/lrun (build/, or build-asan/ and the like), and takes the
 * library and the generated Lua files from its own directory, so every
 * build of a checkout runs its own library. LRUN_ROOT overrides the root
 * (an installed copy, or a launcher copied elsewhere); the build directory
 * is then <root>/build. */
static int find_root(char *root, char *build, size_t cap) {
    const char *env = getenv("LRUN_ROOT");
    if (env && *env) {
        const size_t n = strlen(env);
        if (n + sizeof "/build" > cap) return -1;
        memcpy(root, env, n + 1);
        memcpy(build, env, n);
        memcpy(build + n, "/build", sizeof "/build");
        return 0;
    }
    ssize_t n = readlink("/proc/self/exe", root, cap - 1);
    if (n <= 0 || (size_t)n >= cap - 1) return -1;
    root[n] = '\0';
    for (int up = 0; up < 2; up++) { /* drop "/lrun", then "/build" */
        char *slash = strrchr(root, '/');
        if (!slash) return -1;
        *slash = '\0';
        if (up == 0) strcpy(build, root[0] ? root : "/");
    }
    if (root[0] == '\0') strcpy(root, "/");
    return 0;
}

static int is_file(const char *dir, const char *rel) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, rel) >= (int)sizeof path) return 0;
    return access(path, R_OK) == 0;
}

/* Where the Lua package is: the checkout layout (<root>/lua, the library in
 * <root>/<build>), else `make install`'s (<prefix>/bin/lrun,
 * <prefix>/share/lrun/lua, <prefix>/lib/lrun/liblrun.so). 0, or -1 after a
 * message saying what was looked for and what to do. */
static int locate_package(char *root, char *build, size_t cap) {
    if (is_file(root, "lua/lrun/init.lua")) return 0;
    char prefix[PATH_MAX];
    snprintf(prefix, sizeof prefix, "%s", build); /* <prefix>/bin when installed */
    char *slash = strrchr(prefix, '/');
    if (slash) *slash = '\0';
    char share[PATH_MAX], lib[PATH_MAX];
    if (snprintf(share, sizeof share, "%s/share/lrun", prefix[0] ? prefix : "") < (int)sizeof share
        && snprintf(lib, sizeof lib, "%s/lib/lrun", prefix[0] ? prefix : "") < (int)sizeof lib
        && is_file(share, "lua/lrun/init.lua") && strlen(share) < cap && strlen(lib) < cap) {
        strcpy(root, share);
        strcpy(build, lib);
        return 0;
    }
    fprintf(stderr,
            "%s: cannot find the lrun Lua package (looked for %s/lua/lrun/init.lua and %s/lua/lrun/init.lua);\n"
            "  run the lrun in a checkout's build directory, install it with `make install PREFIX=...`,\n"
            "  or set LRUN_ROOT to the checkout\n",
            progname, strcmp(root, "/") == 0 ? "" : root, share);
    return -1;
}

/* package.path = our directories first, then whatever LuaJIT chose
 * (LUA_PATH or its default), so busted and other rocks still load. */
static void set_package_path(lua_State *L, const char *root, const char *build) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *old = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/lua/?.lua;%s", root, root, build,
                    old ? old : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

/* ---------------------------------------------------------------- interrupts */

/* As luajit does: SIGINT while a chunk runs sets a hook that raises an
 * error at the next Lua instruction, so a long generation can be stopped
 * from the REPL without losing the session. */
static lua_State *running_state;

/* Set by Ctrl-C while a chunk runs. Hooks do not fire inside JIT-compiled
 * loops, so long-running library loops (lrun.generate) also poll this
 * through ffi.C (the launcher is linked with -E, exporting it). */
volatile sig_atomic_t lrun_launcher_interrupted;

static void stop_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static void on_sigint(int sig) {
    signal(sig, SIG_DFL); /* a second Ctrl-C kills, in case Lua never looks */
    lrun_launcher_interrupted = 1;
    if (running_state) lua_sethook(running_state, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* Error handler: a traceback, with table errors shown through tostring. */
static int traceback(lua_State *L) {
    if (lua_isnoneornil(L, 1)) return 1; /* error() with no value: fail silently, as luajit does */
    if (!lua_isstring(L, 1)) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1)) {
            lua_replace(L, 1);
        } else {
            lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
            lua_replace(L, 1);
        }
    }
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

/* Calls the function below nargs arguments with the traceback handler and,
 * when interruptible, Ctrl-C armed; leaves the results (or the message) on
 * the stack. The REPL's own loop is not interruptible: at its prompt Ctrl-C
 * cancels the line (l_readline), and inside a chunk it stops only the chunk. */
static int docall_mode(lua_State *L, int nargs, int nresults, int interruptible) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    if (!interruptible) {
        int status = lua_pcall(L, nargs, nresults, base);
        lua_remove(L, base);
        return status;
    }
    lua_State *outer = running_state;
    running_state = L;
    lrun_launcher_interrupted = 0;
    void (*old)(int) = signal(SIGINT, on_sigint);
    int status = lua_pcall(L, nargs, nresults, base);
    signal(SIGINT, old);
    running_state = outer;
    lua_remove(L, base);
    return status;
}

static int docall(lua_State *L, int nargs, int nresults) {
    return docall_mode(L, nargs, nresults, 1);
}

/* lrun.launcher.pcall(f, ...) → true, results… | false, traceback:
 * the REPL runs user chunks through this so Ctrl-C interrupts them. */
static int l_pcall(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int status = docall(L, lua_gettop(L) - 1, LUA_MULTRET);
    lua_pushboolean(L, status == 0);
    lua_insert(L, 1);
    return lua_gettop(L);
}

/* ---------------------------------------------------------------- line editing */

/* lrun.launcher.readline(prompt, complete) → line | nil (end of input),
 * and true when Ctrl-C cancelled the line (the line is then ""). The REPL
 * calls it instead of readline through ffi so that Ctrl-C at the prompt
 * cancels the line (as in Python and lua) and Tab completion can call Lua:
 * complete(word, line) returns the candidates for the word being typed. */
static volatile sig_atomic_t readline_interrupted;
static lua_State *completing_state; /* the REPL's state while readline runs */
static int completing_ref = LUA_NOREF;

static void on_sigint_readline(int sig) {
    (void)sig;
    readline_interrupted = 1;
}

/* readline's character source: read(2), so that SIGINT (installed without
 * SA_RESTART) interrupts it; an interrupted read clears the line and
 * accepts it. */
static int getc_interruptible(FILE *f) {
    for (;;) {
        if (readline_interrupted) {
            rl_replace_line("", 0);
            return '\n';
        }
        unsigned char c;
        ssize_t n = read(fileno(f), &c, 1);
        if (n == 1) return c;
        if (n == 0 || errno != EINTR) return EOF;
    }
}

/* The candidates of the Lua completer for text, one per call of readline's
 * generator (state 0 starts over). */
static char *complete_generator(const char *text, int state) {
    static int index, count;
    lua_State *L = completing_state;
    if (!L) return NULL;
    if (state == 0) {
        lua_settop(L, 2); /* drop the previous list; keep prompt and completer */
        lua_rawgeti(L, LUA_REGISTRYINDEX, completing_ref);
        lua_pushstring(L, text);
        lua_pushstring(L, rl_line_buffer ? rl_line_buffer : "");
        if (lua_pcall(L, 2, 1, 0) != 0 || !lua_istable(L, -1)) {
            lua_settop(L, 2);
            return NULL;
        }
        index = 0;
        count = (int)lua_objlen(L, -1);
    }
    while (index < count) {
        lua_rawgeti(L, 3, ++index);
        const char *s = lua_tostring(L, -1);
        char *copy = s ? strdup(s) : NULL;
        lua_pop(L, 1);
        if (copy) return copy;
    }
    return NULL;
}

static char **complete(const char *text, int start, int end) {
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* no file names */
    rl_completion_append_character = '\0';
    return rl_completion_matches(text, complete_generator);
}

static int l_readline(lua_State *L) {
    const char *prompt = luaL_optstring(L, 1, "");
    int has_completer = lua_isfunction(L, 2);
    lua_settop(L, 2);
    if (has_completer) {
        lua_pushvalue(L, 2);
        completing_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        completing_state = L;
        rl_attempted_completion_function = complete;
        rl_completer_word_break_characters = " \t\n\"'()[]{},;+-*/=<>~^%#&|";
    }
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint_readline; /* no SA_RESTART: read(2) returns EINTR */
    sigemptyset(&sa.sa_mask);
    readline_interrupted = 0;
    rl_catch_signals = 0;
    rl_getc_function = getc_interruptible;
    sigaction(SIGINT, &sa, &old);
    char *line = readline(prompt);
    sigaction(SIGINT, &old, NULL);
    int interrupted = readline_interrupted;
    readline_interrupted = 0;
    if (has_completer) {
        luaL_unref(L, LUA_REGISTRYINDEX, completing_ref);
        completing_ref = LUA_NOREF;
        completing_state = NULL;
        rl_attempted_completion_function = NULL;
    }
    lua_settop(L, 0);
    if (!line) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, interrupted ? "" : line);
    free(line);
    lua_pushboolean(L, interrupted);
    return 2;
}

static int report(lua_State *L, int status) {
    if (status && !lua_isnil(L, -1)) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s: %s\n", progname, msg ? msg : "(error object is not a string)");
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

/* ---------------------------------------------------------------- setup */

/* config[key] = require("lrun.size").parse(text), the config table on top
 * of the stack: one parser for the launcher and lrun.load. 2 (after a
 * message naming flag) when text is not a size. */
static int set_size(lua_State *L, const char *flag, const char *text, const char *key) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lrun.size");
    if (docall(L, 1, 1)) return report(L, 1);
    lua_getfield(L, -1, "parse");
    lua_pushstring(L, text);
    if (docall(L, 1, 2)) return report(L, 1);
    if (lua_isnil(L, -2)) {
        fprintf(stderr, "%s: %s %s: %s\n", progname, flag, text, lua_tostring(L, -1));
        return 2;
    }
    lua_pop(L, 1);
    lua_setfield(L, -3, key);
    lua_pop(L, 1); /* the lrun.size module */
    return 0;
}

/* package.loaded["lrun.config"] = {root=, build=, lib=, policies={…}, device=,
 * gpu_budget=, host_budget=, threads=, interactive=}. The budgets are parsed by
 * lrun.size so there is one parser for the launcher and lrun.load. */
static int push_config(lua_State *L, const options *o, const char *root, const char *build) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_newtable(L);

    lua_pushstring(L, root);
    lua_setfield(L, -2, "root");
    lua_pushstring(L, build);
    lua_setfield(L, -2, "build");
    const char *lib = getenv("LRUN_LIB");
    if (lib && *lib) lua_pushstring(L, lib);
    else lua_pushfstring(L, "%s/liblrun.so", build);
    lua_setfield(L, -2, "lib");

    lua_newtable(L);
    for (int i = 0; i < o->n_policies; i++) {
        lua_pushstring(L, o->policies[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "policies");

    if (o->device) {
        lua_pushstring(L, o->device);
        lua_setfield(L, -2, "device");
    }
    if (o->threads >= 0) {
        lua_pushinteger(L, o->threads);
        lua_setfield(L, -2, "threads");
    }
    if (o->cpu_offload_gb >= 0) {
        lua_pushnumber(L, o->cpu_offload_gb);
        lua_setfield(L, -2, "cpu_offload_gb");
    }
    if (o->smart_offload) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "smart_offload");
    }
    if (o->prefetch > 0) {
        lua_pushinteger(L, o->prefetch);
        lua_setfield(L, -2, "prefetch_layers");
    }
    if (o->n_overrides > 0) {
        lua_newtable(L);
        for (int i = 0; i < o->n_overrides; i++) {
            lua_pushstring(L, o->overrides[i]);
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "overrides");
    }
    lua_pushboolean(L, o->interactive);
    lua_setfield(L, -2, "interactive");

    int rc = 0; /* 2: a bad size (a usage error, as every bad flag value) */
    if (o->gpu_budget && (rc = set_size(L, "--gpu-budget", o->gpu_budget, "gpu_budget"))) return rc;
    if (o->host_budget && (rc = set_size(L, "--host-budget", o->host_budget, "host_budget"))) return rc;

    lua_setfield(L, -2, "lrun.config");

    /* The launcher's own helpers for Lua code (the REPL). */
    lua_newtable(L);
    lua_pushcfunction(L, l_pcall);
    lua_setfield(L, -2, "pcall");
    lua_pushcfunction(L, l_readline);
    lua_setfield(L, -2, "readline");
    lua_setfield(L, -2, "lrun.launcher");
    lua_pop(L, 2);
    return 0;
}

/* The option values only Lua knows how to check (--device, -ot), checked
 * by lrun.cli as the tools check theirs: 0, or 2 after one line. */
static int check_config(lua_State *L) {
    static const char code[] = "return require('lrun.cli').check_config(require('lrun.config'))";
    if (luaL_loadstring(L, code) != 0 || docall(L, 0, 1) != 0) return report(L, 1);
    int status = 0;
    if (lua_isstring(L, -1)) {
        fprintf(stderr, "%s: %s (try '%s --help')\n", progname, lua_tostring(L, -1), progname);
        status = 2;
    }
    lua_pop(L, 1);
    return status;
}

/* arg as luajit builds it: the script at index 0, its arguments after it,
 * the interpreter and its options at negative indices. */
static void push_arg_table(lua_State *L, int argc, char **argv, int script) {
    lua_createtable(L, argc - script, script);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int run_repl(lua_State *L) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lrun.repl");
    if (docall(L, 1, 1)) return report(L, 1);
    lua_getfield(L, -1, "run");
    lua_remove(L, -2);
    int status = docall_mode(L, 0, 1, 0);
    if (status != 0) return report(L, status);
    int failed = lua_toboolean(L, -1); /* an input failed, and input was not a terminal */
    lua_pop(L, 1);
    return failed;
}

static int print_version(lua_State *L) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lrun.version");
    if (docall(L, 1, 1)) return report(L, 1);
    printf("lrun %s (%s)\n", lua_tostring(L, -1), LUAJIT_VERSION);
    lua_pop(L, 1);
    return 0;
}

/* ---------------------------------------------------------------- main */

/* A model given where a script would be (`lrun model.gguf`): a .gguf,
 * .lrpk or .safetensors file, or a directory with a config.json. */
static int is_model(const char *path) {
    static const char *const exts[] = {".gguf", ".lrpk", ".safetensors"};
    const size_t n = strlen(path);
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        const size_t e = strlen(exts[i]);
        if (n > e && strcmp(path + n - e, exts[i]) == 0) return 1;
    }
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) && is_file(path, "config.json");
}

/* A subcommand (`lrun pack IN OUT`): a word that is no file and that
 * lrun.commands knows. A file of that name still runs as a script. */
static int is_command(lua_State *L, const char *word) {
    if (strcmp(word, "-") == 0 || strchr(word, '/') || strchr(word, '.') || access(word, F_OK) == 0) return 0;
    lua_getglobal(L, "require");
    lua_pushstring(L, "lrun.commands");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pop(L, 1);
        return 0;
    }
    lua_getfield(L, -1, "has");
    lua_pushstring(L, word);
    int yes = lua_pcall(L, 1, 1, 0) == 0 && lua_toboolean(L, -1);
    lua_pop(L, 2);
    return yes;
}

int main(int argc, char **argv) {
    if (argv[0] && argv[0][0]) {
        const char *slash = strrchr(argv[0], '/');
        progname = slash ? slash + 1 : argv[0];
    }
    sigbus_install(progname); /* a truncated model file: a message naming it, not "Bus error" */
    options o;
    if (parse_options(argc, argv, &o) != 0) return 2; /* a usage error, before anything reaches stdout */
    if (o.help) {
        print_usage(stdout);
        return 0;
    }

    char root[PATH_MAX], build[PATH_MAX];
    if (find_root(root, build, sizeof root) != 0) {
        fprintf(stderr, "%s: cannot find the lrun directory from /proc/self/exe; set LRUN_ROOT\n", progname);
        return 1;
    }
    if (locate_package(root, build, sizeof root) != 0) return 1;

    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "%s: cannot create the Lua state: out of memory\n", progname);
        return 1;
    }
    lua_gc(L, LUA_GCSTOP, 0);
    luaL_openlibs(L);
    lua_gc(L, LUA_GCRESTART, -1);
    set_package_path(L, root, build);

    int status = 0, exit_code = 0;
    if (o.version) {
        status = print_version(L);
        lua_close(L);
        return status;
    }
    push_arg_table(L, argc, argv, o.script);
    int config_status = push_config(L, &o, root, build);
    if (config_status == 0) config_status = check_config(L);
    if (config_status != 0) {
        lua_close(L);
        return config_status;
    }

    /* The global `lrun`, as in the REPL, for -e chunks and scripts
     * (require("lrun") is cheap: its submodules load when first used). */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lrun");
    if (docall(L, 1, 1) != 0) {
        report(L, 1);
        lua_close(L);
        return 1;
    }
    lua_setglobal(L, "lrun");

    /* -e chunks, in order; then the script; then (maybe) the REPL. An error
     * ends the run with status 1, except that -i still opens the REPL. */
    for (int i = 0; i < o.n_chunks && status == 0; i++) {
        status = luaL_loadbuffer(L, o.chunks[i], strlen(o.chunks[i]), "=(command line)");
        if (status == 0) status = docall(L, 0, 0);
        report(L, status);
    }
    int has_script = o.script < argc;
    if (status == 0 && o.generate) {
        status = luaL_loadstring(L, "return require('lrun.commands').generate(...)");
        if (status == 0) {
            const int n = argc - o.script;
            luaL_checkstack(L, n, "too many arguments");
            for (int i = 0; i < n; i++) lua_pushstring(L, argv[o.script + i]);
            status = docall(L, n, 1);
            if (status == 0) {
                exit_code = (int)lua_tointeger(L, -1);
                lua_pop(L, 1);
            }
        }
        report(L, status);
        has_script = 1; /* no REPL after a generate command line */
    } else if (status == 0 && has_script) {
        const char *path = argv[o.script];
        const int model = is_model(path);
        const int command = model || is_command(L, path);
        status = model     ? luaL_loadstring(L, "return require('lrun.commands').model(...)")
                 : command ? luaL_loadstring(L, "return require('lrun.commands').run(...)")
                           : luaL_loadfile(L, strcmp(path, "-") == 0 ? NULL : path);
        if (status == 0) {
            int n = argc - o.script - 1; /* the script gets its arguments as ... too */
            luaL_checkstack(L, n + 1, "too many arguments to the script");
            if (command) lua_pushstring(L, path);
            for (int i = 0; i < n; i++) lua_pushstring(L, argv[o.script + 1 + i]);
            status = docall(L, n + command, command ? 2 : 0);
            if (status == 0 && command) { /* a command returns its exit status, and whether to open the REPL */
                if (lua_tointeger(L, -2) != 0) exit_code = (int)lua_tointeger(L, -2);
                if (lua_toboolean(L, -1)) o.interactive = 1;
                lua_pop(L, 2);
            }
        }
        report(L, status);
    }
    if (o.interactive || (!has_script && o.n_chunks == 0)) {
        int repl_status = run_repl(L);
        if (status == 0) status = repl_status; /* a script error still fails the run */
    }
    fflush(stdout);
    lua_close(L);
    return status ? 1 : exit_code;
}
