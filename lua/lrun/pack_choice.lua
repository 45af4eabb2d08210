--- lrun.pack_choice — whether smart (and auto-fit) hold bf16/f16 weights
-- packed when the model does not fit the device plain (docs/packed.md "The
-- automatic choice", issue #12).
--
-- Packed weights are lossless (bit for bit the same logits) and about 0.70
-- of the plain bytes on trained weights, so more of a model fits the
-- device; but a packed weight decodes wherever it is read (lrun.predict
-- prices it: on cuda the fused GEMV at predict.fused_speed of the plain
-- GEMV, on cpu a decode into the scratch before the plain GEMV; streamed,
-- its packed bytes cross and the decode runs on the copy stream). Options,
-- each a whole unit (never a scattered subset):
--   plain       nothing packed that was not packed already: the policy offloads what must leave
--   blocks 0..j-1 packed   the first j blocks' bf16/f16 matrices packed, j bisected for the fewest with
--               which every weight stays on the device (packing more blocks only shrinks the model);
--               each j tried on the way is an option too (where none fits: packed blocks stream,
--               plain ones may be host-computed, which a packed one is not cheaply)
--   all packed  every bf16/f16 matrix (blocks, head, embedding): what must leave the device streams packed
--   packed where streamed   what the policy streams goes packed (mode 2: the packed bytes cross,
--               decoded on the device) while what it host-computes stays plain (#12's mode 2 beside
--               #15's host compute: the link carries about 1/0.70 of its plain rate in weights). Found
--               in two plans: one where every candidate is offered packed but host-computed plain
--               (host_plain: the policy weighs each matrix's packed copy against its plain product),
--               which only says what streams; then what it streams packed, that with what it keeps
--               on the device, and that with what it host-computes (the host multiplies a packed
--               weight as it decodes it, lrun_cpu_matmul_packed, at the measured
--               bw.host_packed_matmul), each planned as it will run (never the mmap/disk tiers' file form)
-- Each option is planned (the policy, as for plain) and predicted by
-- lrun.predict; the options are compared on M.request (a 512-token prompt
-- and 128 generated tokens, lrun.expert_choice's) when prefill is predicted,
-- else on decode alone, and a packed option is taken only when it saves more
-- than M.min_gain of the time of the one taken before it. The encode at load (weights not
-- packed in the file are encoded on the host when placed) is not part of
-- the request: it is paid once per load, and the explanation states it.
-- Never weighed: quantized types (lrun.packed_form.packable: bf16/f16
-- only; GGUF's quantized blocks compress ≤ 1.08×), tensors an override (-ot)
-- places, and anything when the caller asked packed = false (or any other
-- packed option), a policy other than smart, or a layer split's part.
--
-- Pure: the options are evaluated by a function the caller gives (the
-- planner: lrun.residency.plan of the option, sized by the engine's layout
-- code; the specs: M.describe_evaluator over tensor descriptions), so
-- tests/pack_choice_spec.lua checks the choice with given bandwidths.
-- @module lrun.pack_choice
local size = require("lrun.size")
local packed_form = require("lrun.packed_form")

local M = {}

--- The packed/plain ratio assumed for a tensor whose packed size is not
-- known yet (trained bf16 weights, docs/packed.md): used to decide whether
-- measuring the sizes (a read of every candidate, an encode of its f16 ones) is worth it, never to size a
-- placement.
M.assumed_ratio = 0.70

--- What an option must save over the one taken so far (plain, then fewer packed blocks), of its time.
M.min_gain = 0.01

--- The request options are weighed on when prefill is predicted (lrun.expert_choice.request's).
M.request = { prompt = 512, generate = 128 }

--- The host encode's speed (bytes/s of plain input) with n threads when not
-- measured (nothing measures it yet): PEX2 measured 0.56 GB/s on one thread
-- and 3.6 GB/s on 16 (docs/packed.md "The codec PEX2"); between them the
-- power of n through both points (n^0.671), capped at 16 threads' figure.
function M.assumed_encode_rate(threads)
  local n = math.max(1, tonumber(threads) or 1)
  return math.min(3.6e9, 0.56e9 * n ^ (math.log(3.6 / 0.56) / math.log(16)))
end

--- The tensors an option may pack: bf16/f16 matrices (lrun.packed_form.packable), plain now, not excluded.
-- @tparam table tensors descriptions
-- @tparam[opt] table exclude {[name] = true}: tensors the caller placed itself (-ot)
-- @treturn table candidates in the model's order
function M.packable(tensors, exclude)
  local out = {}
  for _, t in ipairs(tensors) do
    if packed_form.packable(t) and not t.packed and not (exclude and exclude[t.name]) then out[#out + 1] = t end
  end
  return out
end

--- The options, from the fewest packed tensors to the most: {label=, blocks= (j, or nil), packs = {[name]=true}}.
-- @treturn table plain, then blocks j (j = 1 .. number of blocks), then all
function M.options(tensors, exclude)
  local cands = M.packable(tensors, exclude)
  local n_block = 0
  for _, t in ipairs(cands) do
    if t.layer and t.layer >= 0 then n_block = math.max(n_block, t.layer + 1) end
  end
  local function blocks(j)
    local packs = {}
    for _, t in ipairs(cands) do if t.layer and t.layer >= 0 and t.layer < j then packs[t.name] = true end end
    return { label = j == 1 and "block 0 packed" or string.format("blocks 0..%d packed", j - 1), blocks = j,
      packs = packs }
  end
  local all = {}
  for _, t in ipairs(cands) do all[t.name] = true end
  -- packed where streamed: the offer (every candidate packed, host-computed plain), and from its evaluation
  -- (plan, host compute) the packings that run: what it streams, and that with what it keeps on the device
  -- in the packed size it was offered at (resident packed weights need the packed decode scratch and read
  -- slower than plain ones, so either may win); nothing it host-computes
  -- (or with what it host-computes: the host multiplies a packed weight decoding it tile by tile, which
  -- reads 0.70 of the bytes from DRAM but costs the decode; smart prices it at the measured rate)
  local offer = { label = "offer: packed where streamed", packs = all, host_plain = true }
  local function streamed(e, with)
    local packs, n = {}, 0
    local hc, plan = e.host_compute or {}, e.plan or {}
    for name in pairs(all) do
      local tier = plan[name] or "device"
      -- the mmap and disk tiers read the file's form: nothing to pack there
      local file_form = tier == "mmap" or tier == "disk"
      local off = tier ~= "device"
      local take = (off and not hc[name]) or (with == "resident" and not off) or (with == "host" and off and hc[name])
      if take and not file_form then packs[name], n = true, n + 1 end
    end
    if n == 0 or n == #cands then return nil end -- plain, or every matrix: options of their own
    local what = with == "resident" and "where streamed or resident"
      or with == "host" and "off the device (streamed or host-computed)" or "where streamed"
    return { label = string.format("packed %s, %d matrices", what, n), streamed = true,
      resident = with == "resident", host = with == "host", packs = packs, n = n }
  end
  return { plain = { label = "plain", packs = {} }, blocks = blocks, n_block = n_block, offer = offer,
    streamed = streamed, all = { label = "every bf16/f16 matrix packed", packs = all }, any = #cands > 0 }
end

-- Where an option sorts among the tried: plain, packed where streamed (then off the device, then with the
-- resident), then by blocks packed, every matrix last.
local function rank(opts, o)
  if o == opts.all then return math.huge end
  return o.blocks or (o.streamed and (o.resident and 0.6 or o.host and 0.55 or 0.5)) or 0
end

-- Seconds of option o on the request (prefill weighed when both o and plain have it), else per token.
local function cost(o, weigh)
  if weigh then return M.request.generate / o.tok_s + M.request.prompt / o.prefill_tok_s end
  return 1 / o.tok_s
end

--- Chooses among the options.
-- @tparam table tensors descriptions (name, role, layer, dtype, shape, bytes, plain_bytes, packed)
-- @tparam function evaluate(option) → {tok_s=, prefill_tok_s= (or nil), off_bytes= (weights off the device),
--   device_bytes=, packed_bytes=, packed_plain=} or nil, err (the option cannot be planned: left out)
-- @tparam[opt] table o exclude= {[name]=true}, encode_rate= (bytes/s; M.assumed_encode_rate(threads) when
--   nil), threads= (the encode's: lrun_tensor_move_form encodes on every core), encode_measured= (true:
--   encode_rate was measured)
-- @treturn table {chosen = option (with its evaluation in .eval), plain=, options = {evaluated, in order},
--   packed = {[name]=true} (the chosen packing, empty for plain), encode_s=, text=}
function M.choose(tensors, evaluate, o)
  o = o or {}
  local opts = M.options(tensors, o.exclude)
  local tried = {}
  local function eval(opt)
    if opt.eval == nil then
      local e, err = evaluate(opt)
      opt.eval, opt.err = e or false, err
      tried[#tried + 1] = opt
    end
    return opt.eval or nil
  end
  local plain = eval(opts.plain)
  if opts.any then
    -- the fewest blocks packed with every weight on the device: off_bytes falls as j grows
    local lo, hi = 1, opts.n_block
    while lo <= hi do
      local mid = math.floor((lo + hi) / 2)
      local e = eval(opts.blocks(mid))
      if e and e.off_bytes == 0 then hi = mid - 1 else lo = mid + 1 end
    end
    eval(opts.all)
    -- packed where streamed: the offer is planned for its split alone (its host-computed matrices are
    -- priced plain, which no packing runs), then the packings it implies
    local offer = evaluate(opts.offer)
    local first -- the others hold the first packing: the same count is the same packing
    for _, with in ipairs(offer and { "none", "resident", "host" } or {}) do
      local opt = opts.streamed(offer, with)
      if opt and (not first or opt.n ~= first.n) then eval(opt) end
      first = first or opt or false
    end
  end
  -- every option planned is a candidate: the fewest blocks that fit, and on the way there (when none
  -- fits) the mixes where packed blocks stream and plain ones are host-computed
  table.sort(tried, function(x, y) return rank(opts, x) < rank(opts, y) end)
  local pool = {}
  for _, opt in ipairs(tried) do if opt ~= opts.plain and opt.eval then pool[#pool + 1] = opt end end
  local weigh = plain and plain.prefill_tok_s ~= nil
  for _, opt in ipairs(pool) do if not opt.eval.prefill_tok_s then weigh = false end end
  local best = plain and opts.plain or nil
  for _, opt in ipairs(pool) do
    if not best then best = opt
    else
      local gain = cost(best.eval, weigh) - cost(opt.eval, weigh)
      if gain > M.min_gain * cost(best.eval, weigh) then best = opt end
    end
  end
  local rate = o.encode_rate or M.assumed_encode_rate(o.threads)
  local enc_plain = 0 -- a packed file's tensor packs to its file's bytes: no encode
  for _, t in ipairs(tensors) do
    if best and best.packs[t.name] and not t.file_packed then enc_plain = enc_plain + t.plain_bytes end
  end
  local r = { chosen = best, plain = opts.plain, options = tried, weighed = weigh,
    packed = best and best.packs or {}, encode_s = enc_plain / rate, encode_bytes = enc_plain }
  r.text = M.text(r, { rate = rate, measured = o.encode_measured, threads = o.threads })
  return r
end

local function tok(x) return x >= 100 and string.format("%.0f", x) or string.format("%.1f", x) end

-- "blocks 0..9 packed: 12.4 GB -> 8.7 GB on the device, 0 B off it, decode 96 tok/s, prefill 1830 tok/s"
local function line(opt)
  local e = opt.eval
  if not e then return string.format("%s: not planned (%s)", opt.label, tostring(opt.err)) end
  local pk = (e.packed_plain or 0) > 0 and string.format(" %s -> %s packed,", size.format(e.packed_plain),
    size.format(e.packed_bytes)) or ""
  return string.format("%s:%s %s on the device, %s off it, predicted decode %s tok/s%s", opt.label, pk,
    size.format(e.device_bytes or 0), size.format(e.off_bytes or 0), tok(e.tok_s),
    e.prefill_tok_s and (", prefill " .. tok(e.prefill_tok_s) .. " tok/s") or "")
end

--- The explanation: the choice and why, then each option weighed.
function M.text(r, enc)
  local c, p = r.chosen, r.plain.eval
  local head
  if not c then head = "packed: no option could be planned"
  elseif c == r.plain then
    local other -- the fastest packed option, for the comparison
    for _, opt in ipairs(r.options) do
      if opt ~= r.plain and opt.eval and (not other or opt.eval.tok_s > other.eval.tok_s) then other = opt end
    end
    head = string.format("packed: not chosen: plain predicted decode %s tok/s%s", tok(p.tok_s),
      other and other.eval and string.format(" against %s tok/s with %s", tok(other.eval.tok_s), other.label) or "")
  else
    local e = c.eval
    head = string.format("packed: chosen (%s): %s -> %s %s, predicted decode %s tok/s against %s "
      .. "tok/s %s plain", c.label, size.format(e.packed_plain), size.format(e.packed_bytes),
      c.host and "packed (streamed, or multiplied on the host)" or c.streamed and "packed (streamed, or on the device)"
        or "on the device", tok(e.tok_s),
      p and tok(p.tok_s) or "?", p and p.off_bytes > 0 and "streaming or host-computing" or "keeping")
    head = head .. string.format("; encoded at load: %s at %.2f GB/s (%s), about %.1f s", size.format(r.encode_bytes),
      enc.rate / 1e9, enc.measured and "measured" or string.format("assumed for %d threads", enc.threads or 1),
      r.encode_s)
  end
  local lines = { head .. (r.weighed and string.format(" (weighed on a %d-token prompt and %d generated tokens)",
    M.request.prompt, M.request.generate) or " (weighed on decode)") }
  for _, opt in ipairs(r.options) do lines[#lines + 1] = "  " .. line(opt) end
  return table.concat(lines, "\n")
end

--- An evaluator over tensor descriptions (no model): the option's tensors
-- packed at their known size (t.packed_bytes) or plain × M.assumed_ratio,
-- planned by policy under a device room for weights (room: bytes; the
-- slots, scratch and KV cache already taken out), predicted by
-- lrun.predict.decode (and .prefill when bw.device_matmul is given).
-- What the planner checks before it measures the sizes, and what the specs use.
-- @tparam table tensors descriptions
-- @tparam number room bytes of weights the device holds
-- @tparam table bw bandwidths (lrun.predict.decode's)
-- @tparam[opt] table q policy= (a policy table, default policies/smart.lua), n_expert_used=, prefill= (a
--   lrun.predict.prefill query: {tokens=, n_layer=, q_dim=}; nil: no prefill)
-- @treturn function evaluate(option)
function M.describe_evaluator(tensors, room, bw, q)
  q = q or {}
  local predict = require("lrun.predict")
  local policy = q.policy or require("lrun.policy_file").resolve("smart")
  return function(opt)
    local descs, total, pk_b, pk_plain = {}, 0, 0, 0
    for i, t in ipairs(tensors) do
      local d = {}
      for k, v in pairs(t) do d[k] = v end
      if opt.packs[t.name] then
        d.packed = true
        d.host_plain = opt.host_plain
        d.bytes = t.packed_bytes or math.floor(t.plain_bytes * M.assumed_ratio)
        d.codec = packed_form.codec(t)
        pk_b, pk_plain = pk_b + d.bytes, pk_plain + t.plain_bytes
      end
      descs[i] = d
      total = total + d.bytes
    end
    local need = total - room
    local plan, hc = {}, {}
    if need > 0 then
      local cap, off = need, 0
      for step = 0, 62 do
        local p, o2, extra = policy.plan(descs, { max_bytes = cap, bandwidth = bw, n_expert_used = q.n_expert_used })
        plan, off, hc = p, o2, (extra and extra.host_compute) or {}
        if off >= need or cap >= total then break end
        cap = math.min(total, cap + math.max(need - off, 1) * 2 ^ step)
      end
      if off < need then return nil, string.format("%s of weights cannot leave the device", size.format(need - off)) end
    end
    local off, dev = 0, 0
    for _, d in ipairs(descs) do
      if (plan[d.name] or "device") ~= "device" then off = off + d.bytes else dev = dev + d.bytes end
    end
    local dec = predict.decode(descs, plan, hc, bw, { n_expert_used = q.n_expert_used })
    local pre = q.prefill and bw.device_matmul and predict.prefill(descs, plan, hc, bw, q.prefill) or nil
    return { tok_s = dec.tok_s, prefill_tok_s = pre and pre.tok_s, off_bytes = off, device_bytes = dev,
      packed_bytes = pk_b, packed_plain = pk_plain, plan = plan, host_compute = hc, decode = dec, prefill = pre }
  end
end

return M
