-- run_tokens.lua PATH [HOST_BUDGET]: 6 greedy tokens of a fixed prompt,
-- printed as "tokens: …", the first logits of another bit for bit ("logits: …"), with the disk tier's stats and this process's
-- peak memory ("peak: VmHWM KIB anon KIB"), for tests/disk/cgroup_test.sh.
local lrun = require("lrun")
local path, budget = arg[1], arg[2]
local opts = { progress = false, n_ctx = 64, threads = 2 }
if budget and budget ~= "" then opts.host_budget = budget end
local m = assert(lrun.load(path, opts))
local _, ids = assert(m:generate({ 1, 300, 42, 7, 260, 99, 12 }, { max_new_tokens = 6 }))
print("tokens: " .. table.concat(ids, " "))
local logits = assert(m:logits({ 1, 300, 42, 7 }))
local bits = {}
for i = 1, 8 do bits[i] = string.format("%a", logits[i]) end
print("logits: " .. table.concat(bits, " "))
if budget then print(m:placement()); print(m:stats()) end
local f = assert(io.open("/proc/self/status"))
local status = f:read("*a")
f:close()
print(string.format("peak: VmHWM %s anon %s", status:match("VmHWM:%s*(%d+)"), status:match("RssAnon:%s*(%d+)")))
