-- luacheck configuration for `make lint` (lua/, policies/, tests/, examples/).
std = "luajit"
-- Code lines are kept near 120 columns but not cut at any cost: a long
-- error message reads better on one line than split in three.
max_line_length = 140
ignore = {
  -- `not (x > y)` is how a check also rejects NaN (`x <= y` would let it
  -- through), e.g. generate.lua's `not (opts.diversity_penalty > 0)`.
  "581",
}
-- The ffi and jit modules are LuaJIT's; `bit` too.
read_globals = { "jit", "bit" }

-- Specs run under busted: describe/it/assert/pending... are its globals.
files["tests"] = {
  std = "+busted",
  ignore = {
    -- A spec calls a function again and checks only some of its results:
    -- `plan, off = f(...)` where only plan is looked at this time.
    "311",
    -- Helpers take the same short names (path, m) as the file's upvalues.
    "431",
  },
}
-- The chat-template goldens are the templates' own single-line strings.
files["tests/chat_spec.lua"] = { max_line_length = false }

-- Every fallback strategy has the same apply(err, config) signature,
-- whether or not it looks at err.
files["policies/fallback"] = { unused_args = false }

-- Policy files run in lrun.policy_file's sandbox, which offers the
-- predicates, OffloadPolicy, the built-in policies and KiB/MiB/GiB as
-- globals (see lua/lrun/policy_file.lua), and may define `plan`.
local policy_file_globals = {
  "OffloadPolicy", "predicates", "KiB", "MiB", "GiB",
  "is_embedding_table", "is_norm_vector", "is_bias", "is_lm_head", "is_attention", "is_mlp",
  "layer_range", "name_matches", "any",
  "conservative", "aggressive", "layers", "smart",
}
files["examples/keep_attention.lua"] = { read_globals = policy_file_globals, globals = { "plan" } }
