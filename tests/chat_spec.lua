-- chat_spec: chat templates render the strings their published formats give.
-- Expected strings are llama.cpp's tests/test-chat-template.cpp expectations
-- for its fixed conversation (system, user, assistant, user, assistant
-- with spaces, user), so lrun and llama.cpp agree on every family.
local chat = require("lrun.chat")

local conversation = {
  { role = "system", content = "You are a helpful assistant" },
  { role = "user", content = "Hello" },
  { role = "assistant", content = "Hi there" },
  { role = "user", content = "Who are you" },
  { role = "assistant", content = "   I am an assistant   " },
  { role = "user", content = "Another question" },
}

-- family → llama.cpp's expected output (add_generation_prompt = true)
local expected = {
  chatml = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n",
  llama2 = "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]",
  ["llama2-sys-bos"] = "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s><s>[INST] Who are you [/INST]   I am an assistant   </s><s>[INST] Another question [/INST]",
  ["llama2-sys-strip"] = "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]I am an assistant</s>[INST] Another question [/INST]",
  monarch = "system\nYou are a helpful assistant</s>\n<s>user\nHello</s>\n<s>assistant\nHi there</s>\n<s>user\nWho are you</s>\n<s>assistant\n   I am an assistant   </s>\n<s>user\nAnother question</s>\n<s>assistant\n",
  gemma = "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n",
  orion = "Human: You are a helpful assistant\n\nHello\n\nAssistant: </s>Hi there</s>Human: Who are you\n\nAssistant: </s>   I am an assistant   </s>Human: Another question\n\nAssistant: </s>",
  openchat = "You are a helpful assistant<|end_of_turn|>GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant: Hi there<|end_of_turn|>GPT4 Correct User: Who are you<|end_of_turn|>GPT4 Correct Assistant:    I am an assistant   <|end_of_turn|>GPT4 Correct User: Another question<|end_of_turn|>GPT4 Correct Assistant:",
  deepseek = "You are a helpful assistant### Instruction:\nHello\n### Response:\nHi there\n<|EOT|>\n### Instruction:\nWho are you\n### Response:\n   I am an assistant   \n<|EOT|>\n### Instruction:\nAnother question\n### Response:\n",
  vicuna = "You are a helpful assistant\n\nUSER: Hello\nASSISTANT: Hi there</s>\nUSER: Who are you\nASSISTANT:    I am an assistant   </s>\nUSER: Another question\nASSISTANT:",
  ["vicuna-orca"] = "SYSTEM: You are a helpful assistant\nUSER: Hello\nASSISTANT: Hi there</s>\nUSER: Who are you\nASSISTANT:    I am an assistant   </s>\nUSER: Another question\nASSISTANT:",
  ["command-r"] = "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi there<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Who are you<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>I am an assistant<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Another question<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
  llama3 = "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  phi3 = "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n",
  chatglm3 = "[gMASK]sop<|system|>\n You are a helpful assistant<|user|>\n Hello<|assistant|>\n Hi there<|user|>\n Who are you<|assistant|>\n    I am an assistant   <|user|>\n Another question<|assistant|>",
  chatglm4 = "[gMASK]<sop><|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\nHi there<|user|>\nWho are you<|assistant|>\n   I am an assistant   <|user|>\nAnother question<|assistant|>\n",
  glmedge = "<|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\nHi there<|user|>\nWho are you<|assistant|>\n   I am an assistant   <|user|>\nAnother question<|assistant|>",
  minicpm = "You are a helpful assistant<\231\148\168\230\136\183>Hello<AI>Hi there<\231\148\168\230\136\183>Who are you<AI>I am an assistant<\231\148\168\230\136\183>Another question<AI>",
  deepseek2 = "You are a helpful assistant\n\nUser: Hello\n\nAssistant: Hi there<\239\189\156end\226\150\129of\226\150\129sentence\239\189\156>User: Who are you\n\nAssistant:    I am an assistant   <\239\189\156end\226\150\129of\226\150\129sentence\239\189\156>User: Another question\n\nAssistant:",
  granite = "<|start_of_role|>system<|end_of_role|>You are a helpful assistant<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Hello<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>Hi there<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Who are you<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>   I am an assistant   <|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Another question<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>",
  ["mistral-v1"] = " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]    I am an assistant   </s> [INST] Another question [/INST]",
  ["mistral-v3"] = "[INST] You are a helpful assistant\n\nHello[/INST] Hi there</s>[INST] Who are you[/INST] I am an assistant</s>[INST] Another question[/INST]",
  ["mistral-v3-tekken"] = "[INST]You are a helpful assistant\n\nHello[/INST]Hi there</s>[INST]Who are you[/INST]   I am an assistant   </s>[INST]Another question[/INST]",
  ["mistral-v7"] = "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another question[/INST]",
  megrez = "<|role_start|>system<|role_end|>You are a helpful assistant<|turn_end|><|role_start|>user<|role_end|>Hello<|turn_end|><|role_start|>assistant<|role_end|>Hi there<|turn_end|><|role_start|>user<|role_end|>Who are you<|turn_end|><|role_start|>assistant<|role_end|>   I am an assistant   <|turn_end|><|role_start|>user<|role_end|>Another question<|turn_end|><|role_start|>assistant<|role_end|>",
  phi4 = "<|im_start|>system<|im_sep|>You are a helpful assistant<|im_end|><|im_start|>user<|im_sep|>Hello<|im_end|><|im_start|>assistant<|im_sep|>Hi there<|im_end|><|im_start|>user<|im_sep|>Who are you<|im_end|><|im_start|>assistant<|im_sep|>   I am an assistant   <|im_end|><|im_start|>user<|im_sep|>Another question<|im_end|><|im_start|>assistant<|im_sep|>",
  -- llama2 with <<SYS>> (HF's Llama-2 format, no BOS inside the history)
  ["llama2-sys"] = "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]",
  -- zephyr: <|role|>\n content <|endoftext|>\n, then <|assistant|>\n (llama.cpp's llama-chat.cpp)
  zephyr = "<|system|>\nYou are a helpful assistant<|endoftext|>\n<|user|>\nHello<|endoftext|>\n<|assistant|>\nHi there<|endoftext|>\n<|user|>\nWho are you<|endoftext|>\n<|assistant|>\n   I am an assistant   <|endoftext|>\n<|user|>\nAnother question<|endoftext|>\n<|assistant|>\n",
}

-- Real templates (from the models' tokenizer_config.json, as quoted in
-- llama.cpp's test), each with the family llama.cpp detects for it.
local templates = {
  { "chatml", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}" },
  { "llama2", "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}" },
  { "llama2-sys-bos", "{%- for idx in range(0, messages|length) -%}\n{%- if messages[idx]['role'] == 'user' -%}\n{%- if idx > 1 -%}\n{{- bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}\n{%- else -%}\n{{- messages[idx]['content'] + ' [/INST]' -}}\n{%- endif -%}\n{% elif messages[idx]['role'] == 'system' %}\n{{- '[INST] <<SYS>>\\n' + messages[idx]['content'] + '\\n<</SYS>>\\n\\n' -}}\n{%- elif messages[idx]['role'] == 'assistant' -%}\n{{- ' '  + messages[idx]['content'] + ' ' + eos_token -}}\n{% endif %}\n{% endfor %}" },
  { "llama2-sys-strip", "{% if message['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + content.strip() + '\\n<</SYS>>\\n\\n' }}{% endif %}" },
  { "monarch", "{% for message in messages %}{{bos_token + message['role'] + '\\n' + message['content'] + eos_token + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ bos_token + 'assistant\\n' }}{% endif %}" },
  { "gemma", "{% for message in messages %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}" },
  { "orion", "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{% if message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\\n\\nAssistant: ' + eos_token }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}" },
  { "openchat", "{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() + ': ' + message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}{{ 'GPT4 Correct Assistant:' }}{% endif %}" },
  { "vicuna", "{%- for message in messages %}{%- if message['role'] == 'system' -%}{{- '' + message['content'] + '\n\n' -}}{%- else -%}{%- if message['role'] == 'user' -%}{{-'USER: ' + message['content'] + '\n'-}}{%- else -%}{{-'ASSISTANT: ' + message['content'] + '</s>\n' -}}{%- endif -%}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{-'ASSISTANT:'-}}{%- endif -%}" },
  { "vicuna-orca", "{%- for message in messages %}{%- if message['role'] == 'system' -%}{{-'SYSTEM: ' + message['content'] + '\n' -}}{%- else -%}{%- if message['role'] == 'user' -%}{{-'USER: ' + message['content'] + '\n'-}}{%- else -%}{{-'ASSISTANT: ' + message['content'] + '</s>\n' -}}{%- endif -%}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{-'ASSISTANT:'-}}{%- endif -%}" },
  { "deepseek", "{%- for message in messages %}{%- if message['role'] == 'user' %}\n{{'### Instruction:\\n' + message['content'] + '\\n'}}\n{%- else %}\n{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}\n{%- endif %}{%- endfor %}" },
  { "command-r", "{% if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% endif %}" },
  { "llama3", "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}" },
  { "phi3", "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}" },
  { "chatglm3", "{% for message in messages %}{% if loop.first %}[gMASK]sop<|{{ message['role'] }}|>\n {{ message['content'] }}{% else %}<|{{ message['role'] }}|>\n {{ message['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}" },
  { "glmedge", "{% for item in messages %}{% if item['role'] == 'system' %}<|system|>\n{{ item['content'] }}{% elif item['role'] == 'user' %}<|user|>\n{{ item['content'] }}{% elif item['role'] == 'assistant' %}<|assistant|>\n{{ item['content'] }}{% endif %}{% endfor %}<|assistant|>" },
  { "granite", "{%- for message in messages %}{{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] + '<|end_of_text|>\\n' }}{%- endfor %}" },
  { "mistral-v1", "{%- if message['role'] == 'user' %}{%- if loop.first and system_message is defined %}{{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}{%- endif %}" },
  { "mistral-v3", "{{- \"[AVAILABLE_TOOLS] [\" }}{{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}" },
  { "mistral-v3-tekken", "{{- \"[AVAILABLE_TOOLS][\" }}{{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}" },
  { "mistral-v7", "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{% endif %}{% endfor %}" },
  { "phi4", "{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}" },
  { "zephyr", "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token }}{% endif %}{% endfor %}<|endoftext|>" },
}

local smollm2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

describe("chat templates", function()
  local names = {}
  for name in pairs(expected) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    it("renders " .. name .. " as llama.cpp does", function()
      assert.are.equal(expected[name], chat.render(conversation, { template = name }))
    end)
  end

  for _, case in ipairs(templates) do
    it("detects " .. case[1] .. " from its Jinja template", function()
      assert.are.equal(case[1], chat.detect(case[2]))
    end)
  end

  it("returns nil for a template it can neither run nor recognise", function()
    assert.is_nil(chat.detect("{% include 'x' %}{{ messages }}"))
    local text, err = chat.render(conversation, { chat_template = "{% include 'x' %}{{ messages }}" })
    assert.is_nil(text)
    assert.are.equal("unsupported", err.kind)
    assert.matches("opts.template", tostring(err), 1, true)
    assert.matches("unknown tag 'include'", tostring(err), 1, true)
  end)

  it("treats a family name as a template", function()
    assert.are.equal("llama3", chat.detect("llama3"))
  end)

  it("leaves out the generation prompt when asked", function()
    local msgs = { { role = "user", content = "Hi" } }
    assert.are.equal("<|im_start|>user\nHi<|im_end|>\n",
      chat.render(msgs, { template = "chatml", add_generation_prompt = false }))
    assert.are.equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
      chat.render(msgs, { template = "chatml" }))
  end)

  describe("SmolLM2's template", function()
    it("is chatml with its default system prompt", function()
      assert.are.equal("chatml", chat.detect(smollm2))
      assert.are.equal("You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        chat.default_system(smollm2))
    end)

    it("adds the default system prompt when the conversation has none", function()
      assert.are.equal(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          .. "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        chat.render({ { role = "user", content = "Hi" } }, { chat_template = smollm2 }))
    end)

    it("keeps the conversation's own system prompt", function()
      assert.are.equal("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        chat.render({ { role = "system", content = "Be brief." }, { role = "user", content = "Hi" } },
          { chat_template = smollm2 }))
    end)

    it("finds no default in a plain chatml template", function()
      assert.is_nil(chat.default_system(templates[1][2]))
    end)
  end)

  describe("custom templates", function()
    it("accepts a Lua function", function()
      local seen_add
      local fn = function(msgs, add)
        seen_add = add
        local out = {}
        for _, m in ipairs(msgs) do out[#out + 1] = m.role:upper() .. ": " .. m.content end
        return table.concat(out, "\n") .. (add and "\nASSISTANT:" or "")
      end
      assert.are.equal("USER: Hi\nASSISTANT:", chat.render({ { role = "user", content = "Hi" } }, { template = fn }))
      assert.is_true(seen_add)
    end)

    it("rejects a function that returns no string", function()
      assert.has_error(function() chat.render({}, { template = function() return 1 end }) end,
        "chat: the template function must return a string")
    end)

    it("rejects an unknown template name", function()
      assert.has_error(function() chat.render({}, { template = "nope" }) end, "chat: unknown template 'nope'")
    end)

    it("rejects malformed messages", function()
      assert.has_error(function() chat.render({ { role = "user" } }, { template = "chatml" }) end,
        "chat: messages[1] must be {role=string, content=string}")
    end)
  end)
end)

describe("model:chat", function()
  local path = os.getenv("LRUN_MODEL")
  if not path then
    pending("LRUN_MODEL is not set")
    return
  end
  local m
  setup(function() m = assert(require("lrun").load(path, { progress = false })) end)
  teardown(function() if m then m:free() end end)

  it("uses the model's template with its default system prompt", function()
    local prompt = chat.apply(m, { { role = "user", content = "Hi" } })
    assert.are.equal("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
      .. "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", prompt)
  end)

  it("tokenizes the template's special tokens as single tokens, without a BOS", function()
    local prompt = chat.apply(m, { { role = "user", content = "Hi" } })
    local ids = m:tokenize(prompt, { add_special = not chat.starts_with_bos(m, prompt), parse_special = true })
    assert.are.equal(m.tokenizer:find("<|im_start|>"), ids[1])
    local n_start = 0
    for _, id in ipairs(ids) do if id == ids[1] then n_start = n_start + 1 end end
    assert.are.equal(3, n_start)
  end)

  it("answers and stops at <|im_end|>", function()
    -- greedy: "Hello! I'm here to help with any kind of creative writing project. …" then <|im_end|>
    local text, ids, stats = m:chat({ { role = "user", content = "Say hello." } }, { max_new_tokens = 48 })
    assert.is_string(text)
    assert.is_true(#ids > 0)
    assert.is_nil(text:find("<|im_end|>", 1, true))
    assert.are.equal("eos", stats.stop_reason)
  end)
end)
