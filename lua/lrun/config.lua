--- lrun.config — defaults for lrun.load when not started by the launcher.
-- The launcher replaces this module with package.loaded["lrun.config"] =
-- {root=, build=, lib=, policies={…}, device=, gpu_budget=, host_budget=, threads=, interactive=,
-- cpu_offload_gb=, smart_offload=, overrides={…}, prefetch_layers=},
-- so `luajit` and `lrun` find the same library and options.
-- @module lrun.config

-- This file is <root>/lua/lrun/config.lua.
local src = debug.getinfo(1, "S").source:sub(2)
local root = src:match("^(.*)/lua/lrun/config%.lua$")
if root == nil or root == "" then root = "." end

return {
  root = root,
  build = root .. "/build", -- the launcher's own directory when it runs us
  lib = os.getenv("LRUN_LIB") or (root .. "/build/liblrun.so"),
  policies = {},
}
