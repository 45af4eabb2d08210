--- lrun.model — a loaded model: tokenize, generate, chat, logits.
--
--     local m = assert(lrun.load(path))
--     local ids = m:tokenize("Hello")            -- {19556}
--     local text = m:generate("Once upon a time", {max_new_tokens = 32})
--     local reply = m:chat({{role = "user", content = "Hi!"}})
--
-- The model owns one engine (the KV cache and scratch), made on first use
-- and reused; each generate/chat/logits call starts a fresh sequence.
-- @module lrun.model
local lf = require("lrun.ffi")
local errors = require("lrun.errors")
local size = require("lrun.size")
local ffi, C = lf.ffi, lf.C

local M = {}

local Model = {}
Model.__index = Model
M.Model = Model

-- ---------------------------------------------------------------- options

local load_opt_types = {
  device = "string|table", gpu_budget = "number|string|table", threads = "number", progress = "boolean",
  n_ctx = "number", cache_implementation = "string", cache_config = "table", rope_style = "string",
  kv_dtype = "string", numerics = "string",
  -- placement (lrun.residency): any of these makes load plan and apply a placement
  policy = "any", cpu_offload_gb = "number", smart_offload = "boolean", overrides = "table",
  prefetch_layers = "number", n_gpu_layers = "number", offload_tier = "string",
  n_cpu_moe = "number", -- a mixture of experts: the first N blocks' experts host-computed (policies/n_cpu_moe.lua)
  -- a mixture of experts on CUDA: host experts computed on the CPU ("compute", the default), copied
  -- into an expert cache of device slots ("cache"; expert_cache_slots = N slots, default: half the free budget),
  -- or both ("hybrid": the slots' hits on the GPU, the misses on the host in the same step, frequent misses
  -- copied into slots in the background; docs/moe.md "Hybrid")
  -- expert_cache_policy = "lfu" (the default: frequency with aging) or "lru" (docs/moe.md "Replacement")
  moe_host = "string", expert_cache_slots = "number", expert_cache_policy = "string",
  -- prefill chunks stream host experts to the GPU (docs/moe.md "Prefill: streaming host experts"): "on", "off",
  -- "auto" (experts with at least moe_prefill_stream_tokens tokens in the chunk; the planner's threshold);
  -- unset: off until GPU-verified, or LRUN_CUDA_MOE_PREFILL_STREAM
  moe_prefill_stream = "string", moe_prefill_stream_tokens = "number",
  -- cuda: a prompt chunk of at least this many tokens copies host-computed matrices to the GPU and multiplies
  -- them there (docs/streaming.md "Prefill over host-computed matrices"); -1 never; unset: the planner's
  -- threshold from the measured rates, else 32 (LRUN_CUDA_HOST_STREAM_ROWS)
  host_stream_rows = "number",
  -- prompt tokens per engine step (llama.cpp's -ub): default 512, or 2048 for a mixture of experts whose host
  -- experts stream in prefill (lrun.prefill_batch)
  n_batch = "number",
  -- sequences a placement reserves KV cache and scratch for (batched generate, beams; llama.cpp's -np): 1
  n_seq = "number",
  host_budget = "number|string", -- cap on host memory lrun holds (lrun.residency: the disk tier takes the rest)
  -- packed weights (docs/packed.md): true, false, a predicate or a list of predicates
  packed = "any",
  -- several devices (lrun.multigpu, docs/multigpu.md): devices = {"cuda:0", "cuda:1"} (or device = the list or
  -- "cuda:0,cuda:1"), tensor_split = "3,1" or {3, 1} (llama.cpp's -ts), gpu_budget = one size or one per device
  devices = "string|table", tensor_split = "string|table",
}

-- Several devices asked for (device/devices with more than one, or
-- tensor_split): {names=, budgets=, proportions=}, else nil. Errors as
-- lrun.load's option errors.
local function multi_device_opts(opts, config)
  local spec = opts.devices or opts.device or config.device
  local ts = opts.tensor_split or config.tensor_split
  local many = type(spec) == "table" or (type(spec) == "string" and spec:find("[,/]") ~= nil)
  if not many and ts == nil then return nil end
  local mg = require("lrun.multigpu")
  local names, err = mg.parse_devices(spec or "cuda")
  if not names then error("lrun.load: option 'devices': " .. err, 3) end
  local out = { names = names }
  local budget = opts.gpu_budget
  if budget == nil then budget = config.gpu_budget end
  if budget ~= nil then
    out.budgets, err = mg.parse_budgets(budget, #names)
    if not out.budgets then error("lrun.load: option 'gpu_budget': " .. err, 3) end
  end
  if ts ~= nil then
    out.proportions, err = mg.parse_split(ts)
    if not out.proportions then error("lrun.load: option 'tensor_split': " .. err, 3) end
    if #out.proportions ~= #names then
      error(string.format("lrun.load: option 'tensor_split': %d proportions for %d devices", #out.proportions,
        #names), 3)
    end
  end
  return out
end

-- packed = false alone on a model with nothing packed asks for no placement, only that auto-fit never packs
-- (lrun.pack_plan): the load goes through auto-fit with it (smart when the model does not fit).
local function only_unpacked(self, popts)
  if popts.packed ~= false then return false end
  if require("lrun.placement_opts").wanted_besides_packed(popts) then return false end
  for _, t in ipairs(self:tensors()) do if t.packed then return false end end
  return true
end

local INT_MAX = size.INT_MAX
local whole_least = { expert_cache_slots = 1, n_batch = 1, moe_prefill_stream_tokens = 1, host_stream_rows = 1,
  n_seq = 1 }

local load_whole = { "threads", "n_ctx", "prefetch_layers", "n_gpu_layers", "n_cpu_moe", "expert_cache_slots",
  "n_batch", "moe_prefill_stream_tokens", "host_stream_rows", "n_seq" }

-- The whole-number options of opts (keys: lrun.load's and model:place's unless given), each at least its least
-- value and none above INT_MAX (the engine's fields are C integers: a larger value would wrap); raises
-- error(msg, level) naming a bad one.
local function check_whole(opts, who, level, keys)
  for _, k in ipairs(keys or load_whole) do
    local v, least = opts[k], whole_least[k] or 0
    if v ~= nil and not (type(v) == "number" and v % 1 == 0 and (v >= least or (k == "host_stream_rows" and v == -1))
        and v <= INT_MAX) then
      error(string.format("%s: option '%s' must be a whole number >= %d and <= %d%s, got %s", who, k, least, INT_MAX,
        k == "host_stream_rows" and ", or -1 (never)" or "", tostring(v)), level)
    end
  end
end

local function check_load_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error("lrun.load: opts must be a table, got " .. type(opts), 3) end
  for k, v in pairs(opts) do
    local want = load_opt_types[k]
    if not want then error("lrun.load: unknown option '" .. tostring(k) .. "'", 3) end
    if want ~= "any" and not want:find(type(v), 1, true) then
      error("lrun.load: option '" .. k .. "' must be a " .. want .. ", got " .. type(v), 3)
    end
  end
  require("lrun.cache").check("lrun.load", opts.cache_implementation, opts.cache_config, 3)
  if opts.kv_dtype and opts.kv_dtype ~= "f16" and opts.kv_dtype ~= "f32" then
    error("lrun.load: kv_dtype must be \"f16\" or \"f32\", got \"" .. opts.kv_dtype .. "\"", 3)
  end
  if opts.numerics and opts.numerics ~= "default" and opts.numerics ~= "exact" then
    error("lrun.load: numerics must be \"default\" or \"exact\", got \"" .. opts.numerics .. "\"", 3)
  end
  if opts.rope_style and opts.rope_style ~= "adjacent" and opts.rope_style ~= "half" then
    error("lrun.load: rope_style must be \"adjacent\" or \"half\", got \"" .. opts.rope_style .. "\"", 3)
  end
  check_whole(opts, "lrun.load", 4)
  if opts.moe_host and opts.moe_host ~= "compute" and opts.moe_host ~= "cache" and opts.moe_host ~= "hybrid" then
    error("lrun.load: moe_host must be \"compute\", \"cache\" or \"hybrid\", got \"" .. opts.moe_host .. "\"", 3)
  end
  local pol = opts.expert_cache_policy
  if pol ~= nil and pol ~= "lfu" and pol ~= "lru" then
    error("lrun.load: expert_cache_policy must be \"lfu\" or \"lru\", got \"" .. pol .. "\"", 3)
  end
  if pol ~= nil and opts.moe_host == "compute" then
    error("lrun.load: expert_cache_policy needs moe_host = \"cache\" (or no moe_host)", 3)
  end
  if pol == "lru" and opts.moe_host == "hybrid" then
    error("lrun.load: expert_cache_policy \"lru\" does not go with moe_host = \"hybrid\" (its admissions compare "
      .. "LFU counts)", 3)
  end
  if opts.expert_cache_slots ~= nil and opts.moe_host == "compute" then
    error("lrun.load: expert_cache_slots needs moe_host = \"cache\" or \"hybrid\" (or no moe_host)", 3)
  end
  local ps = opts.moe_prefill_stream
  if ps ~= nil and ps ~= "auto" and ps ~= "on" and ps ~= "off" then
    error("lrun.load: moe_prefill_stream must be \"auto\", \"on\" or \"off\", got \"" .. ps .. "\"", 3)
  end
  if opts.host_budget ~= nil then
    local n, err = size.parse(opts.host_budget)
    if not n then error("lrun.load: option 'host_budget': " .. err, 3) end
  end
  if opts.cpu_offload_gb and opts.cpu_offload_gb < 0 then
    error("lrun.load: option 'cpu_offload_gb' must be >= 0, got " .. opts.cpu_offload_gb, 3)
  end
  if opts.prefetch_layers and opts.prefetch_layers > 64 then
    error("lrun.load: option 'prefetch_layers' must be at most 64, got " .. opts.prefetch_layers, 3)
  end
  return opts
end

-- ---------------------------------------------------------------- loading

--- Loads a model (see lrun.load).
-- @tparam string path
-- @tparam[opt] table opts
-- @treturn[1] Model
-- @treturn[2] nil
-- @treturn[2] table error
function M.load(path, opts)
  if type(path) ~= "string" then error("lrun.load: path must be a string, got " .. type(path), 2) end
  opts = check_load_opts(opts)
  local config = require("lrun.config")
  local multi = multi_device_opts(opts, config)
  if multi then -- the model loads on the first device, with its budget (lrun.multigpu plans the split)
    local one = {}
    for k, v in pairs(opts) do one[k] = v end
    one.device, one.devices, one.tensor_split = multi.names[1], nil, nil
    if multi.budgets then
      -- one device named for every part (the split runs there): its budget holds every part's
      local same, sum = true, 0
      for i, n in ipairs(multi.names) do same, sum = same and n == multi.names[1], sum + multi.budgets[i] end
      one.gpu_budget = same and sum or multi.budgets[1]
    end
    opts = one
  end

  local budget = opts.gpu_budget
  if budget == nil then budget = config.gpu_budget end
  local budget_bytes = 0
  if budget ~= nil then
    local n, err = size.parse(budget)
    if not n then error("lrun.load: option 'gpu_budget': " .. err, 2) end
    budget_bytes = n
  end
  local threads = opts.threads or config.threads or 0
  local progress = opts.progress
  if progress == nil then progress = require("lrun.sys").isatty(2) end

  local lo = ffi.new("lrun_load_opts")
  local device = opts.device or config.device
  lo.device = device -- the string is kept alive by `device` until the call returns
  lo.device_budget = budget_bytes
  lo.n_threads = threads
  lo.progress = progress and 1 or 0
  lo.rope_style = opts.rope_style == "adjacent" and C.LRUN_ROPE_STYLE_ADJACENT
    or opts.rope_style == "half" and C.LRUN_ROPE_STYLE_HALF or -1
  -- the host budget holds from the start: what the load itself holds (FP8 weights widened, the
  -- loader's staging) is charged under it
  local host_budget = opts.host_budget
  if host_budget == nil then host_budget = config.host_budget end
  if host_budget ~= nil then
    local n, err = size.parse(host_budget)
    if not n then error("lrun.load: option 'host_budget': " .. err, 2) end
    lo.host_budget = n
  end

  local out = ffi.new("lrun_model *[1]")
  local status = C.lrun_model_load(out, path, lo)
  if status ~= C.LRUN_OK then
    return nil, errors.from_status(status, nil, { device = device or "cpu", phase = "load", stage = "load" })
  end

  -- The engine is freed before its model, whichever the collector finds
  -- first: both are released by the model handle's finalizer. `owned`
  -- must not reference the handle, or the finalizer would keep it alive.
  local owned = {}
  local handle = ffi.gc(out[0], function(p)
    if owned.engine ~= nil then C.lrun_engine_free(owned.engine); owned.engine = nil end
    C.lrun_model_free(p)
  end)

  local self = setmetatable({
    handle = handle,
    owned = owned,
    path = path,
    threads = threads,
    n_ctx = opts.n_ctx or 0,
    cache_implementation = opts.cache_implementation or "dynamic",
    cache_config = opts.cache_config,
    kv_dtype = opts.kv_dtype == "f32" and C.LRUN_KV_DTYPE_F32 or C.LRUN_KV_DTYPE_F16,
    numerics = opts.numerics == "exact" and C.LRUN_NUMERICS_EXACT or C.LRUN_NUMERICS_DEFAULT,
    -- lrun_engine_opts.expert_cache_slots: 0 host compute, -1 auto, N slots
    expert_cache_slots = (opts.moe_host == "cache" or opts.moe_host == "hybrid" or opts.expert_cache_slots)
      and (opts.expert_cache_slots or -1) or 0,
    expert_cache_policy = opts.expert_cache_policy == "lru" and C.LRUN_EXPERT_CACHE_REPLACE_LRU
      or C.LRUN_EXPERT_CACHE_REPLACE_DEFAULT,
    -- what the cache does with a miss: copy it in ("cache") or compute it on the host ("hybrid"); smart may
    -- set it when moe_host is left to it (lrun.residency, lrun.expert_choice)
    moe_host = opts.moe_host,
    expert_cache_mode = opts.moe_host == "hybrid" and C.LRUN_EXPERT_CACHE_MODE_HYBRID or C.LRUN_EXPERT_CACHE_MODE_COPY,
    expert_cache_auto = (opts.moe_host == "cache" or opts.moe_host == "hybrid") and not opts.expert_cache_slots,
    -- neither given: smart (auto-fit) chooses compute or cache (lrun.expert_choice); other policies compute
    moe_host_auto = opts.moe_host == nil and opts.expert_cache_slots == nil,
    moe_prefill_stream = ({ on = C.LRUN_MOE_PREFILL_STREAM_ON, off = C.LRUN_MOE_PREFILL_STREAM_OFF,
      auto = C.LRUN_MOE_PREFILL_STREAM_AUTO })[opts.moe_prefill_stream or ""] or C.LRUN_MOE_PREFILL_STREAM_DEFAULT,
    moe_prefill_stream_tokens = opts.moe_prefill_stream_tokens or 0, -- 0: the planner's, else the engine's 16
    n_batch = opts.n_batch or 0, -- prompt tokens per engine step (llama.cpp's -ub); 0: the plan's or the engine's 512
    host_stream_rows = opts.host_stream_rows or 0, -- 0: the plan's threshold, else the engine's default
    n_seq = opts.n_seq or 1, -- sequences the placement reserves for (Model:engine warns past them)
  }, Model)
  self.device_name = ffi.string(C.lrun_device_name(C.lrun_model_device(handle)))
  local info = C.lrun_model_get_info(handle)
  self.n_vocab = tonumber(info.n_vocab)
  local tok = C.lrun_model_tokenizer(handle)
  if tok ~= nil then
    self.tokenizer = require("lrun.tokenizer").wrap(tok, self)
  else
    self.tokenizer = require("lrun.tokenizer").missing(path, self.n_vocab, self:metadata_ints("generation.eos_token_id"))
  end
  self.generation_config = self:read_generation_config()

  -- placement options not given here come from the launcher's command line
  local popts = {}
  for k, v in pairs(opts) do popts[k] = v end
  for _, k in ipairs({ "cpu_offload_gb", "smart_offload", "overrides", "prefetch_layers", "host_budget", "gpu_budget" }) do
    if popts[k] == nil then popts[k] = config[k] end
  end
  -- the runtime refuses host allocations past the budget from here on (the
  -- placement's moves included): lrun_model_set_host_budget
  if popts.host_budget ~= nil then
    C.lrun_model_set_host_budget(handle, (size.parse(popts.host_budget)))
  end
  local residency = require("lrun.residency")
  if multi then
    local serr
    self.split, serr = self:plan_split(multi, popts)
    if not self.split then
      self:free()
      return nil, serr
    end
    -- a split that runs is placed device by device (lrun.split_plan), each within its room
    if self.split.runs and #self.split.devices > 1 then popts.split = require("lrun.multigpu").parts(self.split) end
  end
  local placed, perr
  if residency.wanted(popts) and not only_unpacked(self, popts) then placed, perr = self:place(popts)
  else placed, perr = self:auto_fit(popts) end -- nothing moves when the model fits
  if not placed then
    self:free()
    return nil, perr
  end
  local n_train = tonumber(C.lrun_model_get_info(handle).n_ctx_train)
  if self.n_ctx > n_train and n_train > 0 then
    require("lrun.log").info("warning: n_ctx %d is longer than the context %s was trained for (%d): "
      .. "positions past it may give poor output", self.n_ctx, path, n_train)
  end
  return self
end

-- ---------------------------------------------------------------- lifetime

local function live(self, fn)
  if self.handle == nil then error("model:" .. fn .. ": the model was freed", 3) end
  return self.handle
end

--- Frees the engine and the model now (device memory does not wait for
-- the garbage collector). Safe to call twice.
function Model:free()
  local h = self.handle
  if h == nil then return end
  self.handle = nil
  ffi.gc(h, nil)
  if self.owned.engine ~= nil then
    C.lrun_engine_free(self.owned.engine)
    self.owned.engine = nil
  end
  C.lrun_model_free(h)
end
Model.close = Model.free

--- The engine (the KV cache and scratch), made on first use and kept.
-- A run asks for the shape it needs: the engine is remade when the kept one
-- has too few sequence slots, another cache (implementation and config) or
-- another step size (a static cache must match exactly: its slots hold
-- memory). One engine at a time: the old one's cache and scratch go first.
-- @tparam[opt] table|string req {n_seq=, cache_implementation=, cache_config=, n_batch=};
--   a string is a cache_implementation (with cache_config as the second argument)
-- @tparam[opt] table cache_config when req is a string
-- @treturn[1] cdata lrun_engine *
-- @treturn[2] nil
-- @treturn[2] table error
function Model:engine(req, cache_config)
  local h = live(self, "engine")
  if type(req) == "string" then req = { cache_implementation = req, cache_config = cache_config } end
  local owned = self.owned
  if owned.engine ~= nil and req == nil then return owned.engine end
  req = req or {}
  if type(req) ~= "table" then error("model:engine: req must be a table or a cache_implementation, got " .. type(req), 2) end
  check_whole(req, "model:engine", 3, { "n_seq", "n_batch" })
  local cache = require("lrun.cache")
  local impl = req.cache_implementation or self.cache_implementation
  local config = req.cache_config or (req.cache_implementation == nil and self.cache_config) or nil
  local key = cache.key(impl, config)
  -- tokens per step: the caller's, else the plan's (lrun.prefill_batch), else the load's, else the engine's 512
  local n_batch = req.n_batch or (self.residency and self.residency.n_batch) or self.n_batch
  local n_seq = req.n_seq or 1
  if self.residency and n_seq > self.n_seq and not owned.warned_n_seq then
    -- the plan's room holds the KV cache of the sequences it was made for: more may run out of device memory
    owned.warned_n_seq = true
    require("lrun.log").info("the placement reserved KV cache for %d sequence%s, %d asked: the cache may not fit "
      .. "as it grows (load with n_seq = %d to plan for them)", self.n_seq, self.n_seq == 1 and "" or "s", n_seq, n_seq)
  end
  if owned.engine ~= nil then
    local have = owned.engine_shape
    local growable = impl ~= "static" and impl ~= "offloaded_static"
    if have.key == key and have.n_batch == n_batch and (have.n_seq == n_seq or (have.n_seq > n_seq and growable)) then
      return owned.engine
    end
    C.lrun_engine_free(owned.engine)
    owned.engine = nil
  end
  local eo = ffi.new("lrun_engine_opts")
  eo.n_seq_max = n_seq
  eo.n_ctx_max = self.n_ctx
  eo.n_batch_max = n_batch
  eo.n_threads = self.threads
  eo.kv_dtype = self.kv_dtype
  eo.numerics = self.numerics
  eo.expert_cache_slots = self.expert_cache_slots
  eo.expert_cache_policy = self.expert_cache_policy
  eo.expert_cache_mode = self.expert_cache_mode
  eo.moe_prefill_stream = self.moe_prefill_stream
  eo.moe_prefill_stream_tokens = self.moe_prefill_stream_tokens > 0 and self.moe_prefill_stream_tokens
    or (self.residency and self.residency.prefill_stream_tokens or 0)
  -- the planner's per-block thresholds, unless the caller fixed one: read by lrun_engine_init only
  local per = self.moe_prefill_stream_tokens == 0 and self.residency and self.residency.prefill_stream_block_tokens
  if per then
    local nl = tonumber(C.lrun_model_get_info(h).n_layer)
    local arr = ffi.new("int64_t[?]", nl)
    for l = 0, nl - 1 do arr[l] = per[l] or 0 end
    owned.stream_block_tokens = arr -- kept alive through lrun_engine_init (which copies it)
    eo.moe_prefill_stream_block_tokens = arr
  end
  eo.host_stream_rows = self.host_stream_rows ~= 0 and self.host_stream_rows
    or (self.residency and self.residency.host_stream_rows or 0)
  for k, v in pairs(cache.engine_fields(impl, config)) do eo[k] = v end
  if self.split and self.split.runs then -- the planned layer split, part by part
    local devs = self.split.devices
    local arr = ffi.new("int64_t[?]", #devs)
    for i, d in ipairs(devs) do arr[i - 1] = d.n_layers end
    owned.split_layers = arr -- kept alive through lrun_engine_init (which reads it)
    eo.n_split, eo.split_layers = #devs, arr
  end
  if self.residency then
    eo.weight_mode = C.LRUN_WEIGHT_MODE_AS_PLACED
    eo.prefetch_layers = self.residency.prefetch
  end
  local out = ffi.new("lrun_engine *[1]")
  local status = C.lrun_engine_init(out, h, eo)
  if status ~= C.LRUN_OK then
    return nil, errors.from_status(status, "making the engine",
      { device = self.device_name, phase = "scratch", stage = "engine" })
  end
  owned.engine = out[0]
  owned.engine_shape = { key = key, n_seq = n_seq, n_batch = n_batch }
  return out[0]
end

--- Frees the engine (its KV cache and scratch) now; the next run makes a
-- new one. The weights stay.
function Model:release_engine()
  if self.owned.engine ~= nil then
    C.lrun_engine_free(self.owned.engine)
    self.owned.engine = nil
  end
end


-- ---------------------------------------------------------------- tokens

--- Text to token ids.
-- @tparam string text
-- @tparam[opt] table opts add_special (default true), parse_special (default false)
-- @treturn {int,...}
function Model:tokenize(text, opts)
  live(self, "tokenize")
  return self.tokenizer:encode(text, opts)
end

--- Token ids to text.
-- @tparam {int,...} ids
-- @tparam[opt] table opts special (default true)
-- @treturn string
function Model:detokenize(ids, opts)
  live(self, "detokenize")
  return self.tokenizer:decode(ids, opts)
end

-- ---------------------------------------------------------------- running

--- Generates a continuation (see lrun.generate for the options).
-- @tparam string|{int,...} prompt text (tokenized with add_special) or ids
-- @tparam[opt] table opts
-- @treturn[1] string the new text
-- @treturn[1] {int,...} the new ids
-- @treturn[1] table stats {n_prompt=, n_generated=, prompt_seconds=, generate_seconds=, stop_reason=}
-- @treturn[2] nil
-- @treturn[2] table error
function Model:generate(prompt, opts)
  live(self, "generate")
  return require("lrun.generate").generate(self, prompt, opts, 2)
end

-- Options of model:chat that go to the chat template, not to generate.
local CHAT_OPTS = { template = "template", tools = "tools", documents = "documents", chat_vars = "vars" }

--- Answers a conversation: applies the chat template with the generation
-- prompt, then generates.
-- @tparam {{role=string,content=string},...} messages
-- @tparam[opt] table opts generate options, plus template (a name such as
--   "chatml" or a function(messages, add_generation_prompt) → string),
--   tools and documents (for the model's Jinja template), chat_vars (extra
--   template variables, e.g. {enable_thinking = false})
-- @treturn string
-- @treturn {int,...}
-- @treturn table stats
function Model:chat(messages, opts)
  live(self, "chat")
  local gen_opts, chat_opts = {}, { add_generation_prompt = true }
  if opts ~= nil then
    if type(opts) ~= "table" then error("model:chat: opts must be a table", 2) end
    for k, v in pairs(opts) do
      if CHAT_OPTS[k] then chat_opts[CHAT_OPTS[k]] = v else gen_opts[k] = v end
    end
  end
  local chat = require("lrun.chat")
  local prompt, err = chat.apply(self, messages, chat_opts, 2)
  if not prompt then return nil, err end
  local ids, terr = self.tokenizer:try_encode(prompt, { add_special = not chat.starts_with_bos(self, prompt),
    parse_special = true })
  if not ids then return nil, terr end
  return require("lrun.generate").generate(self, ids, gen_opts, 2)
end

--- The logits of the last position of prompt, from a fresh sequence.
-- @tparam string|{int,...} prompt
-- @treturn[1] {number,...} n_vocab logits
-- @treturn[2] nil
-- @treturn[2] table error
function Model:logits(prompt)
  live(self, "logits")
  local ids = prompt
  if type(prompt) == "string" then ids = self:tokenize(prompt)
  elseif type(prompt) ~= "table" then error("model:logits: prompt must be a string or a table of ids", 2) end
  if #ids == 0 then error("model:logits: the prompt has no tokens", 2) end
  local buf, err = require("lrun.generate").prefill(self, ids)
  if not buf then return nil, err end
  local out = {}
  for i = 0, self.n_vocab - 1 do out[i + 1] = buf[i] end
  return out
end

-- ---------------------------------------------------------------- describing

--- Hyper-parameters and facts about the model.
-- @treturn table
function Model:info()
  local h = live(self, "info")
  local i = C.lrun_model_get_info(h)
  local t = self.tokenizer
  local dev = C.lrun_model_device(h)
  return {
    path = self.path,
    arch = ffi.string(i.arch),
    n_vocab = tonumber(i.n_vocab),
    n_ctx_train = tonumber(i.n_ctx_train),
    n_embd = tonumber(i.n_embd),
    n_layer = tonumber(i.n_layer),
    n_head = tonumber(i.n_head),
    n_head_kv = tonumber(i.n_head_kv),
    head_dim = tonumber(i.head_dim),
    n_ff = tonumber(i.n_ff),
    n_expert = tonumber(i.n_expert),
    n_expert_used = tonumber(i.n_expert_used),
    n_rot = tonumber(i.n_rot),
    rope_freq_base = tonumber(i.rope_freq_base),
    rms_eps = tonumber(i.rms_eps),
    rope_style = i.rope_style == C.LRUN_ROPE_STYLE_HALF and "half" or "adjacent",
    tied_embeddings = i.tied_embeddings ~= 0,
    weight_bytes = tonumber(i.weight_bytes),
    n_tensors = tonumber(C.lrun_model_tensor_count(h)),
    device = dev ~= nil and ffi.string(C.lrun_device_name(dev)) or nil,
    bos_token_id = t.bos_id >= 0 and t.bos_id or nil,
    eos_token_id = t.eos_id >= 0 and t.eos_id or nil,
    eog_token_ids = t:eog_ids(),
    add_bos = t.adds_bos,
    chat_template = require("lrun.chat").model_template(self),
  }
end

local function check_key(key, who)
  if type(key) ~= "string" then error("model:" .. who .. ": key must be a string, got " .. type(key), 3) end
end

--- A GGUF metadata value (numbers, booleans, strings; arrays as tables), or nil.
-- @tparam string key
function Model:metadata(key)
  check_key(key, "metadata")
  local g = C.lrun_model_gguf(live(self, "metadata"))
  if g == nil then return nil end
  local kv = C.lrun_gguf_find_key(g, key)
  if kv < 0 then return nil end
  local ty = C.lrun_gguf_kv_type(g, kv)
  local s, n = ffi.new("const char *[1]"), ffi.new("size_t[1]")
  if ty == C.LRUN_GGUF_TYPE_STRING then
    if C.lrun_gguf_get_str(g, kv, s, n) ~= C.LRUN_OK then return nil end
    return ffi.string(s[0], n[0])
  elseif ty == C.LRUN_GGUF_TYPE_BOOL then
    local b = ffi.new("int[1]")
    if C.lrun_gguf_get_bool(g, kv, b) ~= C.LRUN_OK then return nil end
    return b[0] ~= 0
  elseif ty == C.LRUN_GGUF_TYPE_F32 or ty == C.LRUN_GGUF_TYPE_F64 then
    local d = ffi.new("double[1]")
    if C.lrun_gguf_get_f64(g, kv, d) ~= C.LRUN_OK then return nil end
    return d[0]
  elseif ty == C.LRUN_GGUF_TYPE_ARRAY then
    local et, cnt = ffi.new("lrun_gguf_type[1]"), ffi.new("int64_t[1]")
    if C.lrun_gguf_get_arr(g, kv, et, cnt) ~= C.LRUN_OK then return nil end
    return { type = "array", count = tonumber(cnt[0]) } -- elements stay in the file
  else
    local v = ffi.new("int64_t[1]")
    if C.lrun_gguf_get_i64(g, kv, v) ~= C.LRUN_OK then return nil end
    return tonumber(v[0])
  end
end

--- An integer array of the metadata as a table, or nil.
-- @tparam string key
function Model:metadata_ints(key)
  check_key(key, "metadata_ints")
  local g = C.lrun_model_gguf(live(self, "metadata"))
  if g == nil then return nil end
  local kv = C.lrun_gguf_find_key(g, key)
  local et, cnt = ffi.new("lrun_gguf_type[1]"), ffi.new("int64_t[1]")
  if kv < 0 or C.lrun_gguf_get_arr(g, kv, et, cnt) ~= C.LRUN_OK then return nil end
  local out, v = {}, ffi.new("int64_t[1]")
  for i = 0, tonumber(cnt[0]) - 1 do
    if C.lrun_gguf_get_arr_i64(g, kv, i, v) ~= C.LRUN_OK then return nil end
    out[#out + 1] = tonumber(v[0])
  end
  return out
end

-- generation.* keys: what an HF directory's generation_config.json set
-- (model_hf.c), with the type generate() checks.
local generation_keys = { "temperature", "top_p", "top_k", "min_p", "do_sample", "max_new_tokens",
  "repetition_penalty" }

--- generate() defaults the model brings (an HF directory's
-- generation_config.json, as transformers applies it); {} when none.
-- @treturn table
function Model:read_generation_config()
  local out = {}
  for _, k in ipairs(generation_keys) do
    local v = self:metadata("generation." .. k)
    -- stored as f32: 0.6 reads back as 0.60000002384; keep the digits f32 holds
    if type(v) == "number" and v % 1 ~= 0 then v = tonumber(string.format("%.7g", v)) end
    out[k] = v
  end
  out.eos_token_id = self:metadata_ints("generation.eos_token_id")
  return out
end

-- ---------------------------------------------------------------- placement

-- lrun_tensor_packed_codec's numbers (a packed file entry's)
local codec_names = { [1] = "pex1", [2] = "pex2" }

--- Every weight tensor described for placement policies (policies/), in
-- the model's tensor order.
-- @treturn {{name=, role=, layer=, dtype=, bytes=, plain_bytes=, packed=, codec=, shape={...}, tier=},...}
--   role as lrun_role_name ("embedding", "attn_q", …), layer -1 outside
--   blocks, shape innermost dimension first (as in GGUF), bytes in bytes
function Model:tensors()
  local h = live(self, "tensors")
  local out = {}
  for i = 0, tonumber(C.lrun_model_tensor_count(h)) - 1 do
    local t = C.lrun_model_tensor(h, i)
    local shape = {}
    for a = 0, C.lrun_tensor_ndim(t) - 1 do shape[a + 1] = tonumber(C.lrun_tensor_dim(t, a)) end
    out[#out + 1] = {
      name = ffi.string(C.lrun_tensor_name(t)),
      role = ffi.string(C.lrun_role_name(C.lrun_tensor_role(t))),
      layer = tonumber(C.lrun_tensor_layer(t)),
      dtype = ffi.string(C.lrun_dtype_name(C.lrun_tensor_dtype(t))),
      -- what its tier holds now: the packed bytes of a packed weight (docs/packed.md)
      bytes = tonumber(C.lrun_tensor_stored_bytes(t)),
      plain_bytes = tonumber(C.lrun_tensor_bytes(t)),
      packed = C.lrun_tensor_packed(t) ~= 0,
      -- the packed form's codec once known ("pex1", "pex2"), else nil (lrun.packed_form.codec)
      codec = codec_names[tonumber(C.lrun_tensor_packed_codec(t))],
      shape = shape,
      tier = ffi.string(C.lrun_tier_name(C.lrun_tensor_tier(t))),
    }
  end
  return out
end

local expert_roles = { ffn_gate_exps = "gate", ffn_up_exps = "up", ffn_down_exps = "down" }

-- A mixture of experts' placement, expert by expert (docs/moe.md): each
-- expert's slice of a block's stacked gate/up/down tensor is a unit; today
-- every slice takes its tensor's tier and host-compute flag. nil for a
-- dense model.
-- {n_expert=, n_expert_used=, slices = {[tier] = n}, host_compute_slices = n,
--  layers = {[l] = {gate = tier, up = tier, down = tier}} (0-based l)}
local function expert_placement(h, tiers, host_compute)
  local info = C.lrun_model_get_info(h)
  local n = tonumber(info.n_expert)
  if n == 0 then return nil end
  local ex = { n_expert = n, n_expert_used = tonumber(info.n_expert_used), slices = {}, host_compute_slices = 0,
    layers = {} }
  for i = 0, tonumber(C.lrun_model_tensor_count(h)) - 1 do
    local t = C.lrun_model_tensor(h, i)
    local part = expert_roles[ffi.string(C.lrun_role_name(C.lrun_tensor_role(t)))]
    if part then
      local name, l = ffi.string(C.lrun_tensor_name(t)), tonumber(C.lrun_tensor_layer(t))
      local tier = tiers[name]
      ex.layers[l] = ex.layers[l] or {}
      ex.layers[l][part] = tier
      ex.slices[tier] = (ex.slices[tier] or 0) + n
      if host_compute[name] then ex.host_compute_slices = ex.host_compute_slices + n end
    end
  end
  return ex
end

--- Where the weights are right now.
-- @treturn table {tensors = {[name] = tier name}, bytes = {device=, pinned=, host=, mmap=, disk=},
--   host_compute = {[name] = true}, experts = (a mixture of experts) {n_expert=, n_expert_used=,
--   slices = {[tier] = expert slices}, host_compute_slices=, layers = {[l] = {gate=, up=, down= tier}}},
--   packed = {[name] = true}, packed_bytes = (their packed bytes), packed_plain_bytes = (their plain bytes),
--   packed_ratio = the two's ratio or nil, policy = name or nil, explain = text or nil,
--   predicted = lrun.predict.decode of the plan (tok_s=, limit=, …), prefill = lrun.predict.prefill of a
--   512-token chunk (tok_s=, limit=, …) (both also for a model nothing was planned for: every weight where it
--   is; nil when not measurable), prediction = their text when no plan carries it, auto_fit = true when
--   auto-fit placed it, n_batch = prompt tokens per engine step when not the engine's 512 (lrun.prefill_batch)}
--   (bytes per tier, from lrun_model_tier_bytes: packed weights count their packed bytes);
--   prints as a summary
function Model:placement()
  local h = live(self, "placement")
  local tensors, host_compute, packed = {}, {}, {}
  local packed_bytes, packed_plain = 0, 0
  for i = 0, tonumber(C.lrun_model_tensor_count(h)) - 1 do
    local t = C.lrun_model_tensor(h, i)
    local name = ffi.string(C.lrun_tensor_name(t))
    tensors[name] = ffi.string(C.lrun_tier_name(C.lrun_tensor_tier(t)))
    if C.lrun_tensor_host_compute(t) ~= 0 and tensors[name] ~= "device" then host_compute[name] = true end
    if C.lrun_tensor_packed(t) ~= 0 then
      packed[name] = true
      packed_bytes = packed_bytes + tonumber(C.lrun_tensor_stored_bytes(t))
      packed_plain = packed_plain + tonumber(C.lrun_tensor_bytes(t))
    end
  end
  local bytes = {}
  for tier = 0, C.LRUN_TIER_COUNT - 1 do
    bytes[ffi.string(C.lrun_tier_name(tier))] = tonumber(C.lrun_model_tier_bytes(h, tier))
  end
  local r = self.residency
  local pred = r or self:resident_prediction()
  return setmetatable({ tensors = tensors, bytes = bytes, host_compute = host_compute,
    experts = expert_placement(h, tensors, host_compute),
    packed = packed, packed_bytes = packed_bytes, packed_plain_bytes = packed_plain,
    packed_ratio = packed_plain > 0 and packed_bytes / packed_plain or nil,
    policy = r and r.policy, explain = r and r.explain, prefetch = r and r.prefetch,
    predicted = pred and pred.predicted, prefill = pred and pred.prefill,
    prediction = not r and pred and pred.text or nil, auto_fit = r and r.auto_fit ~= nil or nil, expert_cache = r and r.expert_cache,
    expert_choice = r and r.expert_choice, -- smart's compute-or-cache choice (lrun.expert_choice), with its options
    -- prompt tokens per engine step: the plan's (lrun.prefill_batch) or the load's; nil: the engine's 512
    n_batch = (r and r.n_batch) or (self.n_batch > 0 and self.n_batch or nil),
    host = self:host_memory(), -- the host account now (held by category, budget, peak)
    split = self.split, -- several devices: lrun.multigpu.split's answer
    parts = r and r.parts }, -- a split placed per device (lrun.split_plan): each device's resident/streamed/host
    { __tostring = require("lrun.pretty").placement })
end

-- The predictions for a model nothing was planned for (every weight where
-- it is: resident), measured once and kept: {predicted=, prefill=, text=},
-- or nil when the bandwidths cannot be measured or self.predict is false.
function Model:resident_prediction()
  if self.predict == false then return nil end
  if self.resident_pred == nil then
    local bw = require("lrun.residency").bandwidths(self)
    self.resident_pred = false
    if bw then
      -- no plan: the engine (weight mode ALL_DEVICE) computes every weight as the device's own
      local ok, dec, pre, text = pcall(require("lrun.predict_plan").predict, self, self:tensors(), {}, {}, bw)
      self.resident_pred = ok and { predicted = dec, prefill = pre, text = text }
        or { text = "no prediction: " .. tostring(dec) }
    end
  end
  return self.resident_pred or nil
end

-- The layer split over several devices (lrun.multigpu): planned with every
-- weight on a device, shown by placement() and --explain. With one device
-- named for every part (cpu,cpu or cuda:0,cuda:0) the engine runs the split,
-- part by part (split.runs); otherwise it runs on the first device
-- (docs/multigpu.md: a model's weights on several devices are not built yet).
function Model:plan_split(multi, popts)
  local sized, err = require("lrun.residency").size(self, {}, nil, popts)
  if not sized then return nil, err end
  local distinct = {}
  for _, n in ipairs(multi.names) do distinct[n] = true end
  local runs = next(distinct, next(distinct)) == nil
  local split
  -- a split that runs may need offload: a device short of room places its own layers off it (lrun.split_plan)
  split, err = require("lrun.multigpu").plan(self, multi.names,
    { budgets = multi.budgets, proportions = multi.proportions, sized = sized, offload = runs })
  if not split then return nil, err end
  if runs then
    -- one device named for every part: the engine runs the split (lrun_engine_opts.n_split), each part
    -- an engine of its own; both backends run parts (runs_parts in runtime/backend.h)
    split.runs = true
    split.explain = split.explain .. string.format("\n  runs as %d engines on %s, one per part, the hidden state "
      .. "handed on (logits as one engine's)", #split.devices, multi.names[1])
  else
    require("lrun.log").info("warning: %s: the layer split is planned (see --explain) but runs as one engine on "
      .. "%s (docs/multigpu.md)", table.concat(multi.names, ","), multi.names[1])
  end
  return split
end

--- Plans and applies a placement now (see lrun.load's placement options
-- and lrun.residency): the engine is remade, the KV cache starts empty.
-- @tparam table opts policy=, cpu_offload_gb=, smart_offload=, overrides=,
--   prefetch_layers=, n_gpu_layers=, n_cpu_moe=, offload_tier=, host_budget=, packed= (true, false, a predicate or a list)
-- @treturn[1] table the plan result ({explain=, policy=, off_bytes=, …})
-- @treturn[2] nil
-- @treturn[2] table error
function Model:place(opts)
  live(self, "place")
  if opts ~= nil and type(opts) ~= "table" then error("model:place: opts must be a table", 2) end
  if opts ~= nil then check_whole(opts, "model:place", 3) end
  return require("lrun.residency").place(self, self:place_opts(opts))
end

-- The options Model:place plans with: the load's engine options, then opts.
function Model:place_opts(opts)
  local o = { n_ctx = self.n_ctx, threads = self.threads,
    kv_dtype = self.kv_dtype == C.LRUN_KV_DTYPE_F32 and "f32" or "f16",
    cache_implementation = self.cache_implementation, cache_config = self.cache_config,
    numerics = self.numerics == C.LRUN_NUMERICS_EXACT and "exact" or nil,
    n_batch = self.n_batch > 0 and self.n_batch or nil,
    n_seq = self.n_seq > 1 and self.n_seq or nil,
    -- a split that runs is placed per device (lrun.split_plan), whoever asks
    split = self.split and self.split.runs and #self.split.devices > 1 and require("lrun.multigpu").parts(self.split)
      or nil }
  for k, v in pairs(opts or {}) do o[k] = v end
  return o
end

--- Auto-fit (lrun.load with no placement option, docs/policies.md): when
-- engine init would not fit the device (or its budget) with every weight
-- on it, plans with the smart policy instead of failing there; when it
-- fits, nothing is planned and nothing moves. When no placement fits
-- either, says why on the log (engine init then reports the oom, as
-- without auto-fit): the model is as it was when smart found no plan, and
-- holds smart's last applied placement when its engine did not fit (the
-- log says which).
-- @tparam[opt] table opts load options (the engine's are taken from the model);
--   weights_resident = true tests the cuda decision on a cpu device
-- @treturn[1] table|true the plan result, or true when nothing was planned
-- @treturn[2] nil
-- @treturn[2] table error (from sizing)
function Model:auto_fit(opts)
  live(self, "auto_fit")
  local residency = require("lrun.residency")
  local log = require("lrun.log")
  local o = self:place_opts(opts)
  local fits, need, free
  if o.split then -- a split that runs: every part's engine within its device's room
    fits, need, free = require("lrun.split_plan").fits(self, o, self.split.devices)
  else
    fits, need, free = residency.fits(self, o)
  end
  if fits == nil then return nil, need end
  if fits then return true end
  o.policy = "smart"
  local result, err = residency.place(self, o)
  local what = string.format("auto-fit: %s (%s with scratch and KV cache) does not fit %s (%s free)", self.path,
    size.format(need), self.device_name, size.format(free))
  if not result then
    -- a split fails the load naming the device and layers (it was planned for its rooms, not one device's)
    if o.split then return nil, err end
    local held = type(err) == "table" and err.applied and " (the model keeps smart's last placement)" or ""
    log.info("%s, and smart found no placement either: %s%s", what, tostring(err and err.message or err), held)
    return true
  end
  result.auto_fit = { need = need, free = free }
  local pred = result.predicted and require("lrun.predict").text(result.predicted):match("^(.-) %(") or nil
  log.info("%s: placed with smart, see --explain%s", what, pred and ("; " .. pred) or "")
  return result
end

-- A mixture of experts' routing counts (lrun_engine_expert_counts); nil
-- for a dense model. {n_expert=, n_expert_used=, tokens= (routed through
-- each block), selections= (all blocks: tokens · n_layer · n_expert_used),
-- layers = {[l] = {[x + 1] = selections of expert x}} (0-based l, as in
-- m:placement().experts), top1_share= (per block, the busiest expert's
-- selections, summed, over all selections), top10_share= (the busiest
-- tenth of the (block, expert) pairs' selections over all selections)}
local function expert_stats(self, e)
  local info = self:info()
  local L, E, k = info.n_layer, info.n_expert or 0, info.n_expert_used or 0
  if E == 0 then return nil end
  local counts, tokens = ffi.new("int64_t[?]", L * E), ffi.new("int64_t[?]", L)
  if C.lrun_engine_expert_counts(e, counts, tokens) ~= C.LRUN_OK then return nil end
  local layers, all, n_tok, total, top1 = {}, {}, 0, 0, 0
  for l = 0, L - 1 do
    local row, busiest = {}, 0
    for x = 0, E - 1 do
      local c = tonumber(counts[l * E + x])
      row[x + 1] = c
      all[#all + 1] = c
      total = total + c
      if c > busiest then busiest = c end
    end
    top1 = top1 + busiest
    layers[l] = row
    n_tok = math.max(n_tok, tonumber(tokens[l]))
  end
  table.sort(all, function(a, b) return a > b end)
  local n10, top10 = math.max(1, math.ceil(#all / 10)), 0
  for i = 1, n10 do top10 = top10 + all[i] end
  return { n_expert = E, n_expert_used = k, tokens = n_tok, selections = total, layers = layers,
    top1_share = total > 0 and top1 / total or 0, top10_share = total > 0 and top10 / total or 0 }
end

-- Bytes of one expert of each block (its gate, up and down slices), [layer] = bytes.
local function expert_bytes(self)
  if self.owned.expert_bytes then return self.owned.expert_bytes end
  local n_exp, out = self:info().n_expert or 0, {}
  for _, t in ipairs(self:tensors()) do
    if n_exp > 0 and t.layer and t.layer >= 0 and t.name:match("_exps%.weight$") then
      out[t.layer] = (out[t.layer] or 0) + t.bytes / n_exp
    end
  end
  self.owned.expert_bytes = out
  return out
end

-- The expert cache's counts (lrun_engine_expert_cache_counts, _layer_bytes and, for a
-- hybrid cache, lrun_engine_expert_cache_hybrid_counts); nil without a cache.
-- {slots=, mode = "cache"|"hybrid", hits=, misses=, prefetches=,
-- host_computed= (hybrid: misses the host computed in their step),
-- admissions= (hybrid: misses copied into a slot in the background),
-- bytes_copied=, hit_rate= (hits over acquires, all blocks), layers =
-- {[l] = {hits=, misses=, prefetches=, host_computed=, admissions=, hit_rate=, bytes_copied=,
-- host_computed_bytes=}} (0-based, the cached blocks only)}
local function expert_cache_stats(self, e)
  local L = self:info().n_layer
  local hits, misses, pre = ffi.new("int64_t[?]", L), ffi.new("int64_t[?]", L), ffi.new("int64_t[?]", L)
  local hc, adm, copied = ffi.new("int64_t[?]", L), ffi.new("int64_t[?]", L), ffi.new("uint64_t[?]", L)
  local bytes, slots = ffi.new("uint64_t[1]"), ffi.new("int64_t[1]")
  if C.lrun_engine_expert_cache_counts(e, hits, misses, pre, bytes, slots) ~= C.LRUN_OK or slots[0] == 0
    or C.lrun_engine_expert_cache_hybrid_counts(e, hc, adm) ~= C.LRUN_OK
    or C.lrun_engine_expert_cache_layer_bytes(e, copied) ~= C.LRUN_OK then
    return nil
  end
  local eb = expert_bytes(self)
  local layers, h, m, p, nh, na = {}, 0, 0, 0, 0, 0
  for l = 0, L - 1 do
    local hl, ml, pl, cl, al = tonumber(hits[l]), tonumber(misses[l]), tonumber(pre[l]), tonumber(hc[l]),
      tonumber(adm[l])
    if hl + ml + pl > 0 then
      -- a hybrid miss is computed on the host once a step: its expert's bytes read there
      layers[l] = { hits = hl, misses = ml, prefetches = pl, host_computed = cl, admissions = al,
        hit_rate = hl + ml > 0 and hl / (hl + ml) or 0, bytes_copied = tonumber(copied[l]),
        host_computed_bytes = cl * (eb[l] or 0) }
    end
    h, m, p, nh, na = h + hl, m + ml, p + pl, nh + cl, na + al
  end
  return { slots = tonumber(slots[0]), mode = self.expert_cache_mode == C.LRUN_EXPERT_CACHE_MODE_HYBRID
    and "hybrid" or "cache", hits = h, misses = m, prefetches = p, host_computed = nh, admissions = na,
    bytes_copied = tonumber(bytes[0]), hit_rate = h + m > 0 and h / (h + m) or 0, layers = layers }
end

--- The model's host account: host memory the model and its engines hold
-- now, by category (every host allocation is charged before it is made;
-- past the host budget it fails with LRUN_E_OOM).
-- @treturn table {budget= (bytes, 0 = none), held=, peak=, weights=, kv_cache=, slots=, scratch=,
--   expert_cache=, available= (host memory available now), refused= (charges refused)}
function Model:host_memory()
  local h = live(self, "host_memory")
  local s = ffi.new("lrun_host_stats")
  C.lrun_model_host_stats(h, s)
  return {
    budget = tonumber(s.budget), held = tonumber(s.held), peak = tonumber(s.peak), weights = tonumber(s.weights),
    kv_cache = tonumber(s.kv_cache), slots = tonumber(s.slots), scratch = tonumber(s.scratch),
    expert_cache = tonumber(s.expert_cache), available = tonumber(s.available), refused = tonumber(s.refused),
  }
end

--- What the last streaming read of the weights did (docs/models.md "Loading"):
-- bytes, seconds, threads, chunk bytes, the share found in the page cache
-- (cached, 0 to 1; -1 unknown), whether the warm defaults were taken and
-- whether the pages were kept in the cache; nil before any read (weights
-- still in the file, read through the mapping).
-- @treturn table|nil
function Model:load_stats()
  local h = live(self, "load_stats")
  local s = ffi.new("lrun_load_stats")
  C.lrun_model_load_stats(h, s)
  if s.bytes == 0 then return nil end
  return {
    bytes = tonumber(s.bytes), seconds = s.seconds, threads = s.n_threads, chunk_bytes = tonumber(s.chunk_bytes),
    cached = s.cached, warm = s.warm ~= 0, kept_cache = s.kept_cache ~= 0,
  }
end

--- What the engine has done since it was made or since stats(true):
-- bytes streamed, copy and stall seconds, prefetch hits and misses,
-- a mixture of experts' routing counts (experts),
-- host-compute bytes, device bytes of weights, slots, KV cache, scratch;
-- the KV dtype and prefetch depth; on CUDA, graphs, PDL and the exact path;
-- host = the host account (Model:host_memory: bytes held by category, budget, peak).
-- @tparam[opt] boolean reset clear the counters after reading them
-- @treturn table (numbers; prints as a summary) or nil, err when no engine can be made
function Model:stats(reset)
  live(self, "stats")
  local e, err = self:engine()
  if not e then return nil, err end
  local s = ffi.new("lrun_engine_stats")
  C.lrun_engine_get_stats(e, s)
  local experts = expert_stats(self, e) -- before a reset clears the counts
  local expert_cache = expert_cache_stats(self, e)
  local L = self:info().n_layer
  local per = ffi.new("uint64_t[?]", L)
  local host_layers = {} -- [block] = its share of host_compute_bytes (blocks with none left out)
  if C.lrun_engine_host_compute_layer_bytes(e, per) == C.LRUN_OK then
    for l = 0, L - 1 do if per[l] > 0 then host_layers[l] = tonumber(per[l]) end end
  end
  if reset then C.lrun_engine_reset_stats(e) end
  return setmetatable({
    steps = tonumber(s.steps), bytes_streamed = tonumber(s.bytes_streamed),
    host_compute_layers = host_layers,
    kv_bytes_moved = tonumber(s.kv_bytes_moved), copy_seconds = s.copy_seconds,
    stall_seconds = s.stall_seconds, prefetch_hits = tonumber(s.prefetch_hits),
    prefetch_misses = tonumber(s.prefetch_misses), host_compute_bytes = tonumber(s.host_compute_bytes),
    weight_device_bytes = tonumber(s.weight_device_bytes), slot_bytes = tonumber(s.slot_bytes),
    kv_bytes = tonumber(s.kv_bytes), scratch_bytes = tonumber(s.scratch_bytes),
    kv_bytes_copied = tonumber(s.kv_bytes_copied),
    kv_dtype = s.kv_dtype == C.LRUN_KV_DTYPE_F32 and "f32" or "f16",
    prefetch_layers = s.prefetch_layers,
    -- the CUDA backend's own (0 / false on the CPU)
    graph_captures = tonumber(s.graph_captures), graph_launches = tonumber(s.graph_launches),
    graphs_enabled = s.graphs_enabled ~= 0, pdl_enabled = s.pdl_enabled ~= 0, exact = s.exact ~= 0,
    -- the disk tier's reads (0 when no weight is in it); bandwidth = bytes / seconds
    disk_bytes_read = tonumber(s.disk_bytes_read), disk_read_seconds = s.disk_read_seconds,
    disk_read_bandwidth = s.disk_read_seconds > 0 and tonumber(s.disk_bytes_read) / s.disk_read_seconds or 0,
    disk_queue_depth = s.disk_queue_depth, disk_direct = s.disk_direct ~= 0, disk_stalls = tonumber(s.disk_stalls),
    -- the CPU engine's disk-tier experts, read per chosen expert (docs/moe.md "Experts from the disk")
    expert_store_hits = tonumber(s.expert_store_hits), expert_store_misses = tonumber(s.expert_store_misses),
    -- prefill chunks' host experts streamed to the GPU (docs/moe.md): bytes copied, (block, chunk, expert) count
    prefill_stream_bytes = tonumber(s.prefill_stream_bytes), prefill_stream_experts = tonumber(s.prefill_stream_experts),
    -- of a cached/hybrid block's prefill: experts run from the expert cache's slots instead of streamed, their bytes
    prefill_slot_bytes = tonumber(s.prefill_slot_bytes), prefill_slot_experts = tonumber(s.prefill_slot_experts),
    -- a CUDA engine's host products: their wall time, and the host's waits for the device before them
    host_compute_seconds = s.host_compute_seconds, host_wait_seconds = s.host_wait_seconds,
    -- prompt chunks that multiplied host-computed matrices on the GPU instead: bytes copied, products
    host_stream_bytes = tonumber(s.host_stream_bytes), host_stream_products = tonumber(s.host_stream_products),
    experts = experts, -- a mixture of experts' routing counts (nil when dense)
    expert_cache = expert_cache, -- the expert cache's hits, misses and bytes (nil without one)
    host = self:host_memory(), -- host bytes held by category, budget, peak
  }, { __tostring = require("lrun.pretty").stats })
end

Model.__tostring = function(self)
  if self.handle == nil then return "lrun.model<freed>" end
  local i = C.lrun_model_get_info(self.handle)
  local dev = C.lrun_model_device(self.handle)
  return string.format("lrun.model<%s, %d layers, n_embd %d, vocab %d, %s on %s: %s>",
    ffi.string(i.arch), tonumber(i.n_layer), tonumber(i.n_embd), tonumber(i.n_vocab),
    size.format(tonumber(i.weight_bytes)), dev ~= nil and ffi.string(C.lrun_device_name(dev)) or "?",
    self.path)
end

return M
