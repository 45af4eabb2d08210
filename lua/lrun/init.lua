--- lrun — LLM inference from LuaJIT.
--
--     local lrun = require("lrun")
--     local m = assert(lrun.load("model.gguf", {threads = 4}))
--     print(m:generate("The capital of France is", {max_new_tokens = 8}))
--
-- Submodules load on first use, so `require("lrun")` is cheap and works
-- before the C library is built (lrun.version, lrun.config).
-- @module lrun
local M = {}

M.version = require("lrun.version")
M.config = require("lrun.config")

--- Loads a model file.
-- @tparam string path a GGUF file
-- @tparam[opt] table opts device ("cpu", "cuda:0"), gpu_budget (bytes or "4G"),
--   threads, progress (default: stderr is a terminal), n_ctx,
--   cache_implementation ("dynamic"|"static"|"offloaded"|"offloaded_static"|"quantized"),
--   cache_config ({nbits=, q_group_size=, residual_length=}), rope_style ("adjacent"|"half"),
--   kv_dtype ("f16", the default, or "f32": the KV cache's element type; f32
--   gives llama.cpp's bits with its f32 cache, docs/numerics.md).
--   Placement (docs/policies.md): policy (name, .lua file or table),
--   cpu_offload_gb, smart_offload, overrides ({"pattern=tier", …}),
--   n_gpu_layers, n_cpu_moe, prefetch_layers, offload_tier.
--   Several devices (docs/multigpu.md: the layer split, planned): devices ({"cuda:0", "cuda:1"} or
--   "cuda:0,cuda:1", also through device), tensor_split ("3,1"), gpu_budget one size or one per device.
--   Missing options come from the launcher's command line (lrun.config).
-- @treturn[1] lrun.model
-- @treturn[2] nil
-- @treturn[2] table error {kind=, message=}
function M.load(path, opts)
  return require("lrun.model").load(path, opts)
end

--- Runs fn(config); when it runs out of device memory, asks the fallback
-- strategies in order for a changed config and runs it again (lrun.resilient,
-- docs/fallbacks.md).
-- @tparam function fn function(config) → results, or nil and an error
-- @tparam {string|table|function,...} strategies e.g. {"offload_kv", "offload_weights"}
-- @tparam[opt] table config the first configuration
function M.resilient(fn, strategies, config)
  return require("lrun.resilient").run(fn, strategies, config)
end

--- Packs the bf16/f16 tensors of a GGUF file losslessly (lrun.pack, docs/packed.md).
-- @treturn[1] table stats (ratio, bytes, seconds)
-- @treturn[2] nil
-- @treturn[2] string error
function M.pack(input, output, opts)
  return require("lrun.pack").pack(input, output, opts)
end

-- lrun.chat, lrun.pretty … are the submodules, loaded when first read.
local submodules = {
  chat = true, cli = true, errors = true, ffi = true, generate = true, model = true,
  pretty = true, repl = true, size = true, tokenizer = true, beam = true, beam_groups = true,
  cache_kinds = true, log = true, jinja = true,
}
setmetatable(M, {
  __index = function(t, k)
    if not submodules[k] then return nil end
    local mod = require("lrun." .. k)
    rawset(t, k, mod)
    return mod
  end,
})

return M
