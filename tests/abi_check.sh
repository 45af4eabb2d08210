#!/usr/bin/env bash
# The public ABI is exactly runtime/lrun.h: the functions liblrun.so exports
# (nm -D --defined-only) must be the functions the header declares, no more
# and no fewer. The library is built with -fvisibility=hidden and every
# declaration of lrun.h carries LRUN_API, so a new internal function cannot
# leak and a declaration without LRUN_API (or without a definition) shows
# here. Speaks TAP, like the C tests. ABI_LIB overrides the library path.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
lib=${ABI_LIB:-$here/build/liblrun.so}
header=$here/runtime/lrun.h
echo "1..2"
if [ ! -f "$lib" ]; then echo "not ok 1 - abi: $lib not found (run make)"; exit 1; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# Names declared: the header as Lua sees it (plain C, no comments), one
# declaration per ';'; a function declaration's name is the identifier before its first '('.
${CC:-cc} -E -P -DLRUN_CDEF "$header" | tr '\n' ' ' | tr ';{}' '\n\n\n' |
  grep -v '^[[:space:]]*typedef' | sed -nE 's/^[^(]*[^A-Za-z0-9_(]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\(.*/\1/p' |
  sort -u >"$tmp/declared"
# Names exported: every defined dynamic symbol but the linker's own.
nm -D --defined-only "$lib" | awk '{print $NF}' | grep -vxE '_init|_fini|_edata|_end|__bss_start' |
  sed 's/@.*//' | sort -u >"$tmp/exported"

extra=$(comm -13 "$tmp/declared" "$tmp/exported" | tr '\n' ' ')
missing=$(comm -23 "$tmp/declared" "$tmp/exported" | tr '\n' ' ')
n_decl=$(wc -l <"$tmp/declared"); n_exp=$(wc -l <"$tmp/exported")
if [ -z "$extra" ] && [ -z "$missing" ]; then
  echo "ok 1 - abi: liblrun.so exports exactly the $n_decl functions of lrun.h"
else
  echo "not ok 1 - abi: liblrun.so exports $n_exp symbols, lrun.h declares $n_decl functions"
  [ -z "$extra" ] || echo "#   exported but not in lrun.h: $extra"
  [ -z "$missing" ] || echo "#   in lrun.h but not exported: $missing"
  status=1
fi

# The ffi.cdef text stays plain C: LRUN_API expands to nothing under LRUN_CDEF.
if ${CC:-cc} -E -P -DLRUN_CDEF "$header" | grep -qE 'LRUN_API|__attribute__|visibility'; then
  echo "not ok 2 - abi: the ffi.cdef text (cc -E -P -DLRUN_CDEF lrun.h) still has the export mark"
  status=1
else
  echo "ok 2 - abi: the ffi.cdef text is plain C"
fi
exit ${status:-0}
