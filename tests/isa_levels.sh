#!/usr/bin/env bash
# make test runs at the host kernel level the CPU gives (AVX-512 on the
# machines that have it); this runs the kernel tests and the llama.cpp
# bit-exact comparison (tests/llamacpp_spec.lua) again at the AVX2 level
# (LRUN_CPU_ISA=avx2), so both levels are checked on every run. Speaks TAP.
# SKIP where the build has no AVX2 kernels or the CPU no AVX-512 (then the
# default level already is the one checked here).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
build=${LRUN_BUILD:-build}
level=$(LRUN_CPU_ISA=avx2 "$build/tests/test_dot_isa" 2>/dev/null | sed -n 's/^# host kernel level in use: //p')
default=$("$build/tests/test_dot_isa" 2>/dev/null | sed -n 's/^# host kernel level in use: //p')
if [ "$level" != avx2 ] || [ "$default" = avx2 ]; then
  echo "ok 1 - isa levels: the avx2 pass # SKIP the default level is $default, LRUN_CPU_ISA=avx2 gives ${level:-nothing}"
  echo "1..1"
  exit 0
fi
status=0
for t in test_dot_isa test_quant test_matmul test_gemm_float; do
  echo "# LRUN_CPU_ISA=avx2 $t"
  LRUN_CPU_ISA=avx2 "$build/tests/$t" || status=1
done
if [ -n "${LRUN_MODEL:-}" ] && [ -f "${LRUN_MODEL:-}" ]; then
  echo "# LRUN_CPU_ISA=avx2 tests/llamacpp_spec.lua"
  LRUN_CPU_ISA=avx2 "$build/lrun" /usr/bin/busted -o TAP tests/llamacpp_spec.lua || status=1
else
  echo "ok - isa levels: llamacpp_spec at avx2 # SKIP LRUN_MODEL is not set"
fi
exit $status
