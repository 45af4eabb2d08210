--- hybrid_prefill_predict.lua — what the planner predicts for a 512-token
-- prompt under smart's hybrid plan of the 7B bf16 shape at a GPU budget,
-- with the host's products (lrun.host_stream off) and with host-computed
-- matrices copied to the GPU (its threshold from the same rates), and
-- smart's decode choice with its predicted tok/s (LRUN_CUDA_REFILL_QUEUED=1
-- for the queued refill): pure
-- lrun.predict on given rates, no GPU and no model file (docs/benchmarks.md
-- "Session 21").
--
-- Usage (build machine):
--   build/lrun tests/bench/hybrid_prefill_predict.lua [--off-gb 9.5] [--pcie 55.46] [--host-copy 30]
--       [--host-matmul 88] [--host-gemm 0.5,1.5] [--device-gemm 600]
--   rates in GB/s, GEMM rates in Tflop/s (a list: one line each); the defaults are session 19's H100 link
--   and host matmul figures, an assumed 30 GB/s threaded host copy and 0.5-1.5 Tflop/s host GEMM.
package.path = "./?.lua;" .. package.path
local smart = dofile("policies/smart.lua")
local predict = require("lrun.predict")
local host_stream = require("lrun.host_stream")

local o = { off_gb = 9.5, pcie = 55.46, host_copy = 30, host_matmul = 88, host_gemm = "0.5,1.5", device_gemm = 600 }
local i = 1
while i <= #arg do
  local key = arg[i]:match("^%-%-(.+)$")
  key = key and key:gsub("%-", "_")
  if not key or o[key] == nil or arg[i + 1] == nil then
    io.stderr:write("hybrid_prefill_predict: unknown argument " .. arg[i] .. "\n")
    os.exit(2)
  end
  o[key] = key == "host_gemm" and arg[i + 1] or tonumber(arg[i + 1])
  i = i + 2
end

-- the Llama-2-7B shape in bf16 (tests/bench/llama7b.lua's), as model:tensors() describes it
local tensors = {}
local function add(name, role, layer, k, n)
  tensors[#tensors + 1] = { name = name, role = role, layer = layer, dtype = "bf16", bytes = k * n * 2, shape = { k, n } }
end
add("token_embd.weight", "embedding", -1, 4096, 32000)
add("output.weight", "lm_head", -1, 4096, 32000)
for l = 0, 31 do
  for _, r in ipairs({ "attn_q", "attn_k", "attn_v", "attn_output" }) do
    add(string.format("blk.%d.%s.weight", l, r), r, l, 4096, 4096)
  end
  add(string.format("blk.%d.ffn_gate.weight", l), "ffn_gate", l, 4096, 11008)
  add(string.format("blk.%d.ffn_up.weight", l), "ffn_up", l, 4096, 11008)
  add(string.format("blk.%d.ffn_down.weight", l), "ffn_down", l, 11008, 4096)
end

for g in o.host_gemm:gmatch("[^,]+") do
  local bw = { device = "cuda", h2d_pinned = o.pcie * 1e9, host_read = 95e9, device_read = 3e12,
    host_matmul = { bf16 = o.host_matmul * 1e9 }, host_copy = o.host_copy * 1e9,
    host_gemm = { bf16 = tonumber(g) * 1e12 }, device_matmul = { bf16 = o.device_gemm * 1e12 } }
  local plan, _, info = smart.plan(tensors, { max_bytes = o.off_gb * 1e9, bandwidth = bw })
  local rows = host_stream.threshold(tensors, plan, info.host_compute, bw)
  local on = predict.prefill(tensors, plan, info.host_compute, bw, { tokens = 512, host_stream_rows = rows })
  local off = predict.prefill(tensors, plan, info.host_compute, bw, { tokens = 512, host_stream_rows = -1 })
  print(string.format("host GEMM %.1f Tflop/s: threshold %s rows; prefill 512: %.0f tok/s copied (%.0f ms of "
    .. "copies), %.0f tok/s on the host (%.0f ms of host products); decode: smart shares %s, predicted %.2f tok/s "
    .. "(refill %s)", tonumber(g), tostring(rows), on.tok_s, on.copy_s * 1e3, off.tok_s, off.host_s * 1e3,
    info.split_way == "whole" and "whole blocks" or "each block", info.predicted.tok_s,
    require("lrun.predict_pipeline").refill_queued() and "queued" or "default"))
end
