-- route_stats: how a mixture of experts routes teacher-forced random tokens
-- (decode, one token a step, on the CPU): per block, the distinct experts
-- used, the hit rate of an LRU cache of a fraction of the experts, the share
-- of selections the busiest quarter of the experts takes, and the share of a
-- token's experts the token before also used; then what independent uniform
-- routing would give. The numbers of docs/moe.md, "Routing of generated
-- models", come from it:
--
--   lrun examples/genmodel.lua -o /tmp/moe4.gguf --preset qwen3-30b-a3b --layers 4 --vocab 4096 --dtype q8_0 -q
--   lrun tests/bench/route_stats.lua /tmp/moe4.gguf [TOKENS=64] [SLOT_FRACTION=0.35]
package.path = "./?.lua;" .. package.path
local lrun = require("lrun")
local route_trace = require("tests.route_trace")

local path, n_tok, frac = arg[1], tonumber(arg[2] or 64), tonumber(arg[3] or 0.35)
if not path or not n_tok or not frac or frac <= 0 or frac > 1 then
  io.stderr:write("usage: lrun tests/bench/route_stats.lua MODEL.gguf [TOKENS=64] [SLOT_FRACTION=0.35 in (0, 1]]\n")
  os.exit(2)
end
local m = assert(lrun.load(path, { device = "cpu", progress = false, n_ctx = n_tok + 8 }))
local tr = assert(route_trace.trace(m, n_tok))
local slots = math.floor(tr.n_expert * frac)
local s = route_trace.stats(tr, slots)
local u = route_trace.uniform(tr.n_expert, tr.k, n_tok, slots)
local distinct = {}
for l = 0, tr.n_layer - 1 do distinct[#distinct + 1] = tostring(s.blocks[l].distinct) end
print(string.format("%s: %d tokens, %d blocks x %d experts, top-%d", path, n_tok, tr.n_layer, tr.n_expert, tr.k))
print("distinct experts per block: " .. table.concat(distinct, " "))
print(string.format("%-22s %9s %12s %12s %8s", "", "distinct", "LRU hit", "top quarter", "reuse"))
print(string.format("%-22s %9.1f %12.3f %12.3f %8.3f", "measured (block mean)", s.distinct, s.lru_hit, s.top_quarter,
  s.reuse))
print(string.format("%-22s %9.1f %12.3f %12.3f %8.3f", "independent uniform", u.distinct, u.lru_hit, u.top_quarter,
  u.reuse))
print(string.format("(LRU: %d slots per block, %.0f%% of the experts, cold start included)", slots, frac * 100))
