# memory_cgroup.sh — sourced: make_cg NAME LIMIT_MIB makes a memory cgroup
# of our own limited to LIMIT_MIB (v1 memory.limit_in_bytes, or v2
# memory.max in a delegable subtree) and sets $cg to its directory and $v
# to its version; $cg is empty when none can be made here (not root, no
# memory controller). cg_peak and cg_oom read its peak charged bytes and
# its OOM kills. For tests/disk/cgroup_test.sh and tests/bench/moe_disk_peer.sh.
cg_v1_rel=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup | head -1)
cg_v2_rel=$(awk -F: '$1 == "0" && $2 == "" {print $3}' /proc/self/cgroup | head -1)

make_cg() {
  cg=""; v=""
  [ "$(id -u)" -eq 0 ] || return 0
  if [ -n "$cg_v1_rel" ] && [ -d "/sys/fs/cgroup/memory$cg_v1_rel" ]; then
    cg="/sys/fs/cgroup/memory${cg_v1_rel%/}/$1"; v=1
    mkdir "$cg" 2>/dev/null && echo $(($2 << 20)) >"$cg/memory.limit_in_bytes" 2>/dev/null || cg=""
  elif [ -n "$cg_v2_rel" ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    local parent="/sys/fs/cgroup${cg_v2_rel%/}"
    cg="$parent/$1"; v=2
    grep -qw memory "$parent/cgroup.subtree_control" 2>/dev/null || echo +memory >"$parent/cgroup.subtree_control" 2>/dev/null
    mkdir "$cg" 2>/dev/null && echo $(($2 << 20)) >"$cg/memory.max" 2>/dev/null || cg=""
  fi
}

# Runs a command inside $cg.
in_cg() { sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" "$@"; }

cg_peak() {
  if [ "$v" = 1 ]; then cat "$cg/memory.max_usage_in_bytes"; else cat "$cg/memory.peak" 2>/dev/null || echo 0; fi
}

cg_oom() {
  if [ "$v" = 1 ]; then awk '$1 == "oom_kill" {print $2}' "$cg/memory.oom_control"
  else awk '$1 == "oom_kill" {print $2}' "$cg/memory.events"; fi
}

# Drops a file from the page cache, so that a run in the cgroup reads (and is charged for) every page it touches.
drop_cache() {
  python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)" "$1"
}
