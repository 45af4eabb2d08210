--- lrun.chat — chat templates.
-- A model's Jinja chat template (GGUF tokenizer.chat_template, or
-- tokenizer_config.json's chat_template for an HF directory) is rendered by
-- lrun.jinja the way transformers' apply_chat_template renders it, with
-- messages, tools, documents, add_generation_prompt and the special tokens.
-- When the engine cannot run a template (a construct outside its subset, or
-- a template error), the template is recognised instead by the substrings
-- llama.cpp looks for (src/llama-chat.cpp, first match wins) and rendered by
-- a small Lua function per family; a line on the log says so. A template
-- that hard-codes a default system prompt (SmolLM2: "You are a helpful AI
-- assistant named SmolLM, trained by Hugging Face") gets it in that path too.
--
--     local chat = require("lrun.chat")
--     chat.render({{role="user", content="Hi"}}, {template = "chatml"})
--     --> "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
--     chat.render(msgs, {chat_template = jinja_text, bos_token = "<s>"})
--
-- A template may also be a Lua function(messages, add_generation_prompt) → string.
-- docs/chat.md has the supported Jinja subset and how to debug a template.
-- @module lrun.chat
local errors = require("lrun.errors")
local jinja = require("lrun.jinja")
local log = require("lrun.log")

local M = {}

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end
local function has(t, s) return t:find(s, 1, true) ~= nil end

-- ---------------------------------------------------------------- families
-- Each: function(messages, add_ass, ctx) → string; ctx.default_system is the
-- template's own system prompt, if any.

local T = {}
M.templates = T

function T.chatml(msgs, add_ass, ctx)
  local out = {}
  if ctx and ctx.default_system and (msgs[1] == nil or msgs[1].role ~= "system") then
    out[1] = "<|im_start|>system\n" .. ctx.default_system .. "<|im_end|>\n"
  end
  for _, m in ipairs(msgs) do out[#out + 1] = "<|im_start|>" .. m.role .. "\n" .. m.content .. "<|im_end|>\n" end
  if add_ass then out[#out + 1] = "<|im_start|>assistant\n" end
  return table.concat(out)
end

-- [INST] families: llama2 and its variants (system in <<SYS>>, BOS inside
-- the history, stripped content).
local function llama2(support_system, bos_inside, strip)
  return function(msgs)
    local out = { "[INST] " }
    local inside = true
    for _, m in ipairs(msgs) do
      local content = strip and trim(m.content) or m.content
      if not inside then
        inside = true
        out[#out + 1] = bos_inside and "<s>[INST] " or "[INST] "
      end
      if m.role == "system" then
        if support_system then out[#out + 1] = "<<SYS>>\n" .. content .. "\n<</SYS>>\n\n"
        else out[#out + 1] = content .. "\n" end
      elseif m.role == "user" then
        out[#out + 1] = content .. " [/INST]"
      else
        out[#out + 1] = content .. "</s>"
        inside = false
      end
    end
    return table.concat(out)
  end
end
T.llama2 = llama2(false, false, false)
T["llama2-sys"] = llama2(true, false, false)
T["llama2-sys-bos"] = llama2(true, true, false)
T["llama2-sys-strip"] = llama2(true, false, true)

-- Mistral's v1, v3 and v3-tekken differ in the spaces around [INST] and
-- whether the assistant's text is trimmed.
local function mistral(leading, trailing, trim_assistant)
  return function(msgs)
    local out, inside = {}, false
    for _, m in ipairs(msgs) do
      if not inside then
        out[#out + 1] = leading .. "[INST]" .. trailing
        inside = true
      end
      if m.role == "system" then out[#out + 1] = m.content .. "\n\n"
      elseif m.role == "user" then out[#out + 1] = m.content .. leading .. "[/INST]"
      else
        out[#out + 1] = trailing .. (trim_assistant and trim(m.content) or m.content) .. "</s>"
        inside = false
      end
    end
    return table.concat(out)
  end
end
T["mistral-v1"] = mistral(" ", " ", false)
T["mistral-v3"] = mistral("", " ", true)
T["mistral-v3-tekken"] = mistral("", "", false)

local function mistral_v7(space)
  return function(msgs)
    local out = {}
    for _, m in ipairs(msgs) do
      if m.role == "system" then out[#out + 1] = "[SYSTEM_PROMPT]" .. space .. m.content .. "[/SYSTEM_PROMPT]"
      elseif m.role == "user" then out[#out + 1] = "[INST]" .. space .. m.content .. "[/INST]"
      else out[#out + 1] = space .. m.content .. "</s>" end
    end
    return table.concat(out)
  end
end
T["mistral-v7"] = mistral_v7(" ")
T["mistral-v7-tekken"] = mistral_v7("")

-- "<|role|>\n content END\n" families.
local function tagged(open, close, sep, end_, ass)
  return function(msgs, add_ass)
    local out = {}
    for _, m in ipairs(msgs) do out[#out + 1] = open .. m.role .. close .. sep .. m.content .. end_ end
    if add_ass then out[#out + 1] = ass end
    return table.concat(out)
  end
end
T.phi3 = tagged("<|", "|>", "\n", "<|end|>\n", "<|assistant|>\n")
T.phi4 = tagged("<|im_start|>", "<|im_sep|>", "", "<|im_end|>", "<|im_start|>assistant<|im_sep|>")
T.falcon3 = tagged("<|", "|>", "\n", "\n", "<|assistant|>\n")
T.zephyr = tagged("<|", "|>", "\n", "<|endoftext|>\n", "<|assistant|>\n")
T.granite = tagged("<|start_of_role|>", "<|end_of_role|>", "", "<|end_of_text|>\n",
  "<|start_of_role|>assistant<|end_of_role|>")
T.megrez = tagged("<|role_start|>", "<|role_end|>", "", "<|turn_end|>", "<|role_start|>assistant<|role_end|>")
T.glmedge = tagged("<|", "|>", "\n", "", "<|assistant|>")

function T.monarch(msgs, add_ass)
  local out = {}
  for i, m in ipairs(msgs) do
    out[#out + 1] = (i == 1 and "" or "<s>") .. m.role .. "\n" .. m.content .. "</s>\n"
  end
  if add_ass then out[#out + 1] = "<s>assistant\n" end
  return table.concat(out)
end

-- Gemma has no system role: the system text joins the next user turn.
function T.gemma(msgs, add_ass)
  local out, system = {}, ""
  for _, m in ipairs(msgs) do
    if m.role == "system" then
      system = system .. trim(m.content)
    else
      local role = m.role == "assistant" and "model" or m.role
      out[#out + 1] = "<start_of_turn>" .. role .. "\n"
      if system ~= "" and role ~= "model" then
        out[#out + 1] = system .. "\n\n"
        system = ""
      end
      out[#out + 1] = trim(m.content) .. "<end_of_turn>\n"
    end
  end
  if add_ass then out[#out + 1] = "<start_of_turn>model\n" end
  return table.concat(out)
end

function T.orion(msgs)
  local out, system = {}, ""
  for _, m in ipairs(msgs) do
    if m.role == "system" then system = system .. m.content
    elseif m.role == "user" then
      out[#out + 1] = "Human: "
      if system ~= "" then out[#out + 1] = system .. "\n\n"; system = "" end
      out[#out + 1] = m.content .. "\n\nAssistant: </s>"
    else out[#out + 1] = m.content .. "</s>" end
  end
  return table.concat(out)
end

function T.openchat(msgs, add_ass)
  local out = {}
  for _, m in ipairs(msgs) do
    if m.role == "system" then out[#out + 1] = m.content .. "<|end_of_turn|>"
    else
      out[#out + 1] = "GPT4 Correct " .. m.role:sub(1, 1):upper() .. m.role:sub(2) .. ": " .. m.content
        .. "<|end_of_turn|>"
    end
  end
  if add_ass then out[#out + 1] = "GPT4 Correct Assistant:" end
  return table.concat(out)
end

local function vicuna(orca)
  return function(msgs, add_ass)
    local out = {}
    for _, m in ipairs(msgs) do
      if m.role == "system" then out[#out + 1] = orca and ("SYSTEM: " .. m.content .. "\n") or (m.content .. "\n\n")
      elseif m.role == "user" then out[#out + 1] = "USER: " .. m.content .. "\n"
      elseif m.role == "assistant" then out[#out + 1] = "ASSISTANT: " .. m.content .. "</s>\n" end
    end
    if add_ass then out[#out + 1] = "ASSISTANT:" end
    return table.concat(out)
  end
end
T.vicuna = vicuna(false)
T["vicuna-orca"] = vicuna(true)

function T.deepseek(msgs, add_ass)
  local out = {}
  for _, m in ipairs(msgs) do
    if m.role == "system" then out[#out + 1] = m.content
    elseif m.role == "user" then out[#out + 1] = "### Instruction:\n" .. m.content .. "\n"
    elseif m.role == "assistant" then out[#out + 1] = "### Response:\n" .. m.content .. "\n<|EOT|>\n" end
  end
  if add_ass then out[#out + 1] = "### Response:\n" end
  return table.concat(out)
end

local EOS_DS = "<\239\189\156end\226\150\129of\226\150\129sentence\239\189\156>" -- <｜end▁of▁sentence｜>
function T.deepseek2(msgs, add_ass)
  local out = {}
  for _, m in ipairs(msgs) do
    if m.role == "system" then out[#out + 1] = m.content .. "\n\n"
    elseif m.role == "user" then out[#out + 1] = "User: " .. m.content .. "\n\n"
    elseif m.role == "assistant" then out[#out + 1] = "Assistant: " .. m.content .. EOS_DS end
  end
  if add_ass then out[#out + 1] = "Assistant:" end
  return table.concat(out)
end

local USER_DS3 = "<\239\189\156User\239\189\156>"           -- <｜User｜>
local ASSISTANT_DS3 = "<\239\189\156Assistant\239\189\156>" -- <｜Assistant｜>
function T.deepseek3(msgs, add_ass)
  local out = {}
  for _, m in ipairs(msgs) do
    if m.role == "system" then out[#out + 1] = m.content .. "\n\n"
    elseif m.role == "user" then out[#out + 1] = USER_DS3 .. m.content
    elseif m.role == "assistant" then out[#out + 1] = ASSISTANT_DS3 .. m.content .. EOS_DS end
  end
  if add_ass then out[#out + 1] = ASSISTANT_DS3 end
  return table.concat(out)
end

T["command-r"] = function(msgs, add_ass)
  local tags = { system = "<|SYSTEM_TOKEN|>", user = "<|USER_TOKEN|>", assistant = "<|CHATBOT_TOKEN|>" }
  local out = {}
  for _, m in ipairs(msgs) do
    local tag = tags[m.role]
    if tag then out[#out + 1] = "<|START_OF_TURN_TOKEN|>" .. tag .. trim(m.content) .. "<|END_OF_TURN_TOKEN|>" end
  end
  if add_ass then out[#out + 1] = "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>" end
  return table.concat(out)
end

local function header(open, close, eot)
  return function(msgs, add_ass)
    local out = {}
    for _, m in ipairs(msgs) do out[#out + 1] = open .. m.role .. close .. "\n\n" .. trim(m.content) .. eot end
    if add_ass then out[#out + 1] = open .. "assistant" .. close .. "\n\n" end
    return table.concat(out)
  end
end
T.llama3 = header("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
T.llama4 = header("<|header_start|>", "<|header_end|>", "<|eot|>")

function T.chatglm3(msgs, add_ass)
  local out = { "[gMASK]sop" }
  for _, m in ipairs(msgs) do out[#out + 1] = "<|" .. m.role .. "|>\n " .. m.content end
  if add_ass then out[#out + 1] = "<|assistant|>" end
  return table.concat(out)
end

function T.chatglm4(msgs, add_ass)
  local out = { "[gMASK]<sop>" }
  for _, m in ipairs(msgs) do out[#out + 1] = "<|" .. m.role .. "|>\n" .. m.content end
  if add_ass then out[#out + 1] = "<|assistant|>\n" end
  return table.concat(out)
end

local USER_CPM = "<\231\148\168\230\136\183>" -- <用户>
function T.minicpm(msgs)
  local out = {}
  for _, m in ipairs(msgs) do
    if m.role == "user" then out[#out + 1] = USER_CPM .. trim(m.content) .. "<AI>"
    else out[#out + 1] = trim(m.content) end
  end
  return table.concat(out)
end

function T.exaone3(msgs, add_ass)
  local out = {}
  for _, m in ipairs(msgs) do
    if m.role == "system" then out[#out + 1] = "[|system|]" .. trim(m.content) .. "[|endofturn|]\n"
    elseif m.role == "user" then out[#out + 1] = "[|user|]" .. trim(m.content) .. "\n"
    elseif m.role == "assistant" then out[#out + 1] = "[|assistant|]" .. trim(m.content) .. "[|endofturn|]\n" end
  end
  if add_ass then out[#out + 1] = "[|assistant|]" end
  return table.concat(out)
end

-- SmolVLM uses <|im_start|> as its BOS, but is not chatml.
function T.smolvlm(msgs, add_ass)
  local out = { "<|im_start|>" }
  for _, m in ipairs(msgs) do
    if m.role == "system" then out[#out + 1] = m.content .. "\n\n"
    elseif m.role == "user" then out[#out + 1] = "User: " .. m.content .. "<end_of_utterance>\n"
    else out[#out + 1] = "Assistant: " .. m.content .. "<end_of_utterance>\n" end
  end
  if add_ass then out[#out + 1] = "Assistant:" end
  return table.concat(out)
end

-- ---------------------------------------------------------------- detection

--- The family of a Jinja chat template, by llama.cpp's substring rules.
-- A template that is itself a family name ("chatml") names that family.
-- @tparam string tmpl
-- @treturn string|nil the family, nil when unknown
function M.detect(tmpl)
  if type(tmpl) ~= "string" then error("chat.detect: template must be a string", 2) end
  if T[tmpl] then return tmpl end
  local c = function(s) return has(tmpl, s) end
  if c("<|im_start|>") then
    if c("<|im_sep|>") then return "phi4" end
    if c("<end_of_utterance>") then return "smolvlm" end
    return "chatml"
  elseif tmpl:sub(1, 7) == "mistral" or c("[INST]") then
    if c("[SYSTEM_PROMPT]") then return "mistral-v7" end
    if c("' [INST] ' + system_message") or c("[AVAILABLE_TOOLS]") then
      if c(" [INST]") then return "mistral-v1" end
      if c('"[INST]"') then return "mistral-v3-tekken" end
      return "mistral-v3"
    end
    if c("content.strip()") then return "llama2-sys-strip" end
    if c("bos_token + '[INST]") then return "llama2-sys-bos" end
    if c("<<SYS>>") then return "llama2-sys" end
    return "llama2"
  elseif c("<|assistant|>") and c("<|end|>") then return "phi3"
  elseif c("[gMASK]<sop>") then return "chatglm4"
  elseif c("<|assistant|>") and c("<|user|>") then return c("</s>") and "falcon3" or "glmedge"
  elseif c("<|{{ item['role'] }}|>") and c("<|begin_of_image|>") then return "glmedge"
  elseif c("<|user|>") and c("<|endoftext|>") then return "zephyr"
  elseif c("bos_token + message['role']") then return "monarch"
  elseif c("<start_of_turn>") then return "gemma"
  elseif c("'\\n\\nAssistant: ' + eos_token") then return "orion"
  elseif c("GPT4 Correct ") then return "openchat"
  elseif c("USER: ") and c("ASSISTANT: ") then return c("SYSTEM: ") and "vicuna-orca" or "vicuna"
  elseif c("### Instruction:") and c("<|EOT|>") then return "deepseek"
  elseif c("<|START_OF_TURN_TOKEN|>") and c("<|USER_TOKEN|>") then return "command-r"
  elseif c("<|start_header_id|>") and c("<|end_header_id|>") then return "llama3"
  elseif c("[gMASK]sop") then return "chatglm3"
  elseif c(USER_CPM) then return "minicpm"
  elseif c("'Assistant: ' + message['content'] + eos_token") then return "deepseek2"
  elseif c(ASSISTANT_DS3) and c(USER_DS3) and c(EOS_DS) then return "deepseek3"
  elseif c("[|system|]") and c("[|assistant|]") and c("[|endofturn|]") then return "exaone3"
  elseif c("<|start_of_role|>") then return "granite"
  elseif c("<|role_start|>") then return "megrez"
  elseif c("<|header_start|>") and c("<|header_end|>") then return "llama4"
  end
  return nil
end

-- Jinja string-literal escapes, for text taken out of a template.
local function unescape(s)
  return (s:gsub("\\(.)", { n = "\n", t = "\t", ["'"] = "'", ['"'] = '"', ["\\"] = "\\" }))
end

--- The system prompt a chatml template writes when the conversation has
-- none: a literal "<|im_start|>system\n…<|im_end|>" in the template text.
-- @tparam string tmpl
-- @treturn string|nil
function M.default_system(tmpl)
  for _, nl in ipairs({ "\n", "\\n" }) do
    local open = "<|im_start|>system" .. nl
    local from = 1
    while true do
      local a, b = tmpl:find(open, from, true)
      if not a then break end
      local e = tmpl:find("<|im_end|>", b + 1, true)
      if not e then break end
      local text = tmpl:sub(b + 1, e - 1)
      -- text built from variables (' + messages[0]['content'] + ') is not a default
      if not text:find("['\"{}]") then return unescape(text) end
      from = e
    end
  end
  return nil
end

-- ---------------------------------------------------------------- rendering

--- Python's None for message fields (content of a tool-call message):
-- a Lua nil leaves the field out, which a template sees as undefined.
M.null = jinja.value.NONE

local function check_messages(messages, level)
  if type(messages) ~= "table" then error("chat: messages must be a table of {role=, content=}", level) end
  for i, m in ipairs(messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      error("chat: messages[" .. i .. "] must be {role=string, content=string}", level)
    end
  end
end

-- The family renderers take text content only: a misuse when the caller
-- chose the family (level given), an expected failure on the fallback path.
local function text_only(messages, level)
  for i, m in ipairs(messages) do
    if type(m.content) ~= "string" then
      local msg = "messages[" .. i .. "] must be {role=string, content=string}"
      if level then error("chat: " .. msg, level + 1) end
      return nil, errors.new("arg", msg .. " for lrun's built-in chat formats")
    end
  end
  return true
end

-- Fallbacks already logged (error and family), so a chat loop says it once.
local warned = {}

-- The last compiled template, so that a chat loop parses it once.
local cache = { text = nil, template = nil }

local function compiled(text)
  if cache.text ~= text then
    local t, err = jinja.compile(text)
    if not t then return nil, err end
    cache.text, cache.template = text, t
  end
  return cache.template
end

--- Renders messages with a Jinja chat template, with the variables
-- transformers' apply_chat_template passes.
-- @tparam string text the template
-- @tparam table messages
-- @tparam[opt] table opts add_generation_prompt (default true), tools,
--   documents (tables, or JSON text whose key order is kept), bos_token,
--   eos_token (and any other special token by name),
--   vars (extra template variables, e.g. {enable_thinking = false}), limits
-- @treturn[1] string
-- @treturn[2] nil
-- @treturn[2] table error {kind="template", reason=, line=, col=}
function M.render_jinja(text, messages, opts)
  opts = opts or {}
  local t, err = compiled(text)
  if not t then return nil, err end
  local vars = {}
  for k, v in pairs(opts.vars or {}) do vars[k] = v end
  for _, k in ipairs({ "bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token" }) do
    if opts[k] ~= nil then vars[k] = opts[k] end
  end
  vars.messages = messages
  for _, k in ipairs({ "tools", "documents" }) do
    local v = opts[k]
    if type(v) == "string" then -- JSON text: decoded with its key order kept
      local decoded, jerr = require("lrun.jinja.json").decode(v)
      if decoded == nil then return nil, errors.new("arg", "opts." .. k .. ": " .. tostring(jerr)) end
      v = decoded
    end
    vars[k] = v or M.null
  end
  vars.add_generation_prompt = opts.add_generation_prompt ~= false
  return t:render(vars, { limits = opts.limits })
end

--- Renders a conversation to prompt text.
-- @tparam {{role=,content=},...} messages
-- @tparam[opt] table opts template (a family name or a function(messages,
--   add_generation_prompt) → string), chat_template (a Jinja template:
--   rendered by lrun.jinja; recognised by its substrings when that fails),
--   add_generation_prompt (default true), default_system, and for the Jinja
--   path tools, documents, bos_token, eos_token, vars (see render_jinja)
-- @treturn[1] string
-- @treturn[2] nil
-- @treturn[2] table error {kind="unsupported"} for a template it can neither run nor recognise
function M.render(messages, opts, level)
  level = (level or 1) + 1
  opts = opts or {}
  check_messages(messages, level)
  local add_ass = opts.add_generation_prompt ~= false
  local tmpl = opts.template
  if type(tmpl) == "function" then
    local out = tmpl(messages, add_ass)
    if type(out) ~= "string" then error("chat: the template function must return a string", level) end
    return out
  end
  local ctx = { default_system = opts.default_system }
  local chosen = tmpl ~= nil
  if tmpl == nil then
    local text = opts.chat_template
    if text == nil then
      tmpl = "chatml" -- llama.cpp's choice for a model without a template
    else
      local out, jerr = M.render_jinja(text, messages, opts)
      if out then return out end
      tmpl = M.detect(text)
      if not tmpl then
        return nil, errors.new("unsupported", "the model's chat template cannot be rendered (" .. tostring(jerr)
          .. ") and is not one lrun recognises; pass opts.template (a name such as \"chatml\" or a function)",
          { cause = jerr })
      end
      local said = tostring(jerr) .. tmpl
      if not warned[said] then
        warned[said] = true
        log.info("chat template: %s; using lrun's built-in %s format instead", tostring(jerr), tmpl)
      end
      if ctx.default_system == nil then ctx.default_system = M.default_system(text) end
    end
  end
  if type(tmpl) ~= "string" then error("chat: template must be a name or a function", level) end
  local fn = T[tmpl]
  if not fn then error("chat: unknown template '" .. tmpl .. "'", level) end
  local ok, err = text_only(messages, chosen and level or nil)
  if not ok then return nil, err end
  return fn(messages, add_ass, ctx)
end

--- The model's chat template text: model.chat_template when the loader set
-- one (an HF directory's tokenizer_config.json), else the GGUF
-- tokenizer.chat_template; nil when the model has none.
function M.model_template(model)
  local t = rawget(model, "chat_template")
  if type(t) == "string" then return t end
  return model:metadata("tokenizer.chat_template")
end

-- The special tokens a template sees: model.special_tokens when the loader
-- set them (tokenizer_config.json), else the texts of the BOS and EOS ids.
local function special_tokens(model)
  local st = rawget(model, "special_tokens")
  if type(st) == "table" then return st end
  local out, tok = {}, model.tokenizer
  if tok.bos_id >= 0 then out.bos_token = tok:token_text(tok.bos_id) end
  if tok.eos_id >= 0 then out.eos_token = tok:token_text(tok.eos_id) end
  return out
end

--- Renders messages with the model's own template (or opts.template).
-- @tparam table opts template, add_generation_prompt, tools, documents, vars
-- @treturn[1] string
-- @treturn[2] nil
-- @treturn[2] table error
function M.apply(model, messages, opts, level)
  level = (level or 1) + 1
  opts = opts or {}
  local ropts = { template = opts.template, add_generation_prompt = opts.add_generation_prompt,
    tools = opts.tools, documents = opts.documents, vars = opts.vars }
  if opts.template == nil then
    ropts.chat_template = M.model_template(model)
    for k, v in pairs(special_tokens(model)) do ropts[k] = v end
  end
  return M.render(messages, ropts, level)
end

--- True when prompt already begins with the model's BOS text (so
-- tokenizing must not add another).
function M.starts_with_bos(model, prompt)
  local bos = model.tokenizer.bos_id
  if bos < 0 then return false end
  local text = model.tokenizer:token_text(bos)
  return text ~= nil and text ~= "" and prompt:sub(1, #text) == text
end

--- The family names, sorted.
function M.names()
  local out = {}
  for k in pairs(T) do out[#out + 1] = k end
  table.sort(out)
  return out
end

return M
