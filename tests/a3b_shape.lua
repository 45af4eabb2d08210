--- tests/a3b_shape.lua — the Qwen3-30B-A3B shape in Q4_K as the planner sees
-- it (tensor descriptions, no file) and the H100 machine of session 15's
-- hybrid runs, for specs that replay the planner's choice on that
-- benchmark without a GPU (tests/expert_choice_spec.lua; docs/moe.md
-- "Weighing prefill"). The descriptions are model:tensors()' of
-- `examples/genmodel.lua --preset qwen3-30b-a3b --dtype q4_k`: 48 blocks of
-- 128 experts (top-8), hidden 2048, expert FFN 768, an untied 151936-row
-- head, every matrix Q4_K (144 bytes per 256 values), norms and the router
-- f32; one expert's three slices are 3 × 884,736 bytes, a block's experts
-- 340 MB, all of them 16.3 GB.
local M = {}

M.n_layer, M.n_expert, M.k, M.n_embd, M.n_ff, M.n_vocab = 48, 128, 8, 2048, 768, 151936
M.expert_slice = 884736 -- bytes of one expert's gate (or up, or down) slice in Q4_K

local function q4_k(n) return n / 256 * 144 end

--- The tensor descriptions, in the model's order.
function M.tensors()
  local out = {}
  local function add(name, role, layer, dtype, shape)
    local n = 1
    for _, d in ipairs(shape) do n = n * d end
    local b = dtype == "f32" and 4 * n or q4_k(n)
    out[#out + 1] = { name = name, role = role, layer = layer, dtype = dtype, bytes = b, plain_bytes = b,
      shape = shape }
  end
  local d, e, ff = M.n_embd, M.n_expert, M.n_ff
  add("token_embd.weight", "embedding", -1, "q4_k", { d, M.n_vocab })
  for l = 0, M.n_layer - 1 do
    local p = "blk." .. l .. "."
    add(p .. "attn_norm.weight", "attn_norm", l, "f32", { d })
    add(p .. "attn_q.weight", "attn_q", l, "q4_k", { d, 4096 })
    add(p .. "attn_q_norm.weight", "attn_norm", l, "f32", { 128 })
    add(p .. "attn_k.weight", "attn_k", l, "q4_k", { d, 512 })
    add(p .. "attn_k_norm.weight", "attn_norm", l, "f32", { 128 })
    add(p .. "attn_v.weight", "attn_v", l, "q4_k", { d, 512 })
    add(p .. "attn_output.weight", "attn_output", l, "q4_k", { 4096, d })
    add(p .. "ffn_norm.weight", "ffn_norm", l, "f32", { d })
    add(p .. "ffn_gate_inp.weight", "ffn_gate_inp", l, "f32", { d, e })
    add(p .. "ffn_gate_exps.weight", "ffn_gate_exps", l, "q4_k", { d, ff, e })
    add(p .. "ffn_down_exps.weight", "ffn_down_exps", l, "q4_k", { ff, d, e })
    add(p .. "ffn_up_exps.weight", "ffn_up_exps", l, "q4_k", { d, ff, e })
  end
  add("output_norm.weight", "output_norm", -1, "f32", { d })
  add("output.weight", "lm_head", -1, "q4_k", { d, M.n_vocab })
  return out
end

--- Session 15's H100 (80GB HBM3, 16 cores) as the planner's bandwidth table: pinned PCIe ~25 GB/s and the
-- device's read ~3 TB/s (the brief of session 16), pageable PCIe 10 GB/s and the host's DRAM read 97.3 GB/s
-- (session 9's peer_bw.py on that machine, docs/benchmarks.md), the host's Q4_K expert GEMV 62.7 GB/s (the
-- measured host matmul rate there, docs/benchmarks.md), a pool call 6 µs and a round trip 20 µs (the host
-- pass's fixed costs, docs/moe.md "Measured: the default"), and for prefill cuBLAS at 100 TFLOP/s on Q4_K
-- (dequantized) and the host's 64-row expert product at 0.7 TFLOP/s (16 cores of the 2-core build machine's
-- 114 GFLOP/s, docs/moe.md). A copy per call: the planner writes measured figures into its table.
function M.bandwidths()
  return { device = "cuda", device_read = 3e12, h2d_pinned = 25e9, h2d_pageable = 10e9, host_read = 97.3e9,
    host_matmul = { q4_k = 62.7e9 }, host_call_s = 6e-6, round_trip_s = 20e-6,
    device_matmul = { q4_k = 100e12, f32 = 50e12 }, host_gemm = { q4_k = 1e12 }, host_batch = { q4_k = 0.7e12 } }
end

--- Device bytes the weights may take under the 8 GiB budget: the budget less the engine's scratch (669 MiB),
-- the KV cache of peer_lrun's 592 positions and the pool's slack, 792 MB together: what leaves
-- experts_on_host's hybrid cache the 2417 slots session 15's run had (6.89 GB after the non-expert weights,
-- less prefill streaming's 42 MB of staging and the 1/16 margin, in 2.65 MB slots).
M.weight_room = 8 * 2 ^ 30 - 792e6

--- Routing counts with a trained router's popularity: Zipf(s) over each block's experts (s = 0.65: the OLMoE
-- trace's fit, about `--router-skew 8`'s popularity, docs/moe.md "Routing of generated models"), the ranks
-- rotated per block.
function M.zipf_counts(s)
  local c = {}
  for l = 0, M.n_layer - 1 do
    c[l] = {}
    for x = 1, M.n_expert do
      local rank = (x - 1 + 7 * l) % M.n_expert + 1
      c[l][x] = math.floor(1e5 * rank ^ -s + 0.5)
    end
  end
  return c
end

return M
