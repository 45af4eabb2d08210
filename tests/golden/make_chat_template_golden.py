#!/usr/bin/env python3
"""Golden chat-template renderings from jinja2, for tests/chat_template_spec.lua.

Renders every template of tests/chat_templates/templates.json with every
conversation of tests/chat_templates/conversations.json (add_generation_prompt
true and false), and every snippet of tests/chat_templates/snippets.json, with
jinja2 set up as transformers' apply_chat_template sets it up
(transformers/utils/chat_template_utils.py): ImmutableSandboxedEnvironment
with trim_blocks, lstrip_blocks, the loopcontrols extension and a
`generation` tag (AssistantTracker), tojson overridden by json.dumps with
ensure_ascii=False and sort_keys=False, and the raise_exception and
strftime_now globals. The variables are those apply_chat_template passes:
messages, tools (None when not given), documents (None),
add_generation_prompt, the tokenizer's special tokens (bos_token, eos_token
when set) and the template's extra variables.

Writes tests/golden/chat_templates.json: one case per rendering, with the
output or, when jinja2 fails, the error ("raised" for raise_exception).

SmolLM2's template is read from the default model's GGUF metadata
(tokenizer.chat_template, with the gguf package) into
tests/chat_templates/smollm2.jinja when the model is there.

Regenerate (needs jinja2; gguf for SmolLM2's template):
    python3 tests/golden/make_chat_template_golden.py [--model PATH]
tests/chat_template_jinja2.py runs the same renderings live for the spec.
"""
import argparse
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TEMPLATES = os.path.join(ROOT, "tests", "chat_templates")
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


class AssistantTracker(jinja2.ext.Extension):
    """transformers' {% generation %} tag: marks assistant text for masks;
    the rendered text is the body's, unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_render", [])
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def environment():
    """jinja2 as transformers' _compile_jinja_template configures it."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(text, variables):
    """{"output": str} or {"error": str, "kind": "syntax" | "raised" | "render"}."""
    env = environment()
    try:
        template = env.from_string(text)
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": f"line {e.lineno}: {e.message}", "kind": "syntax"}
    except Exception as e:  # noqa: BLE001 - assertion errors (unknown filter) and the like
        return {"error": f"{type(e).__name__}: {e}", "kind": "syntax"}
    try:
        return {"output": template.render(**variables)}
    except jinja2.exceptions.TemplateError as e:
        if type(e) is jinja2.exceptions.TemplateError:
            return {"error": e.message, "kind": "raised"}
        return {"error": f"{type(e).__name__}: {e}", "kind": "render"}
    except Exception as e:  # noqa: BLE001 - TypeError, ZeroDivisionError ... from the template
        return {"error": f"{type(e).__name__}: {e}", "kind": "render"}


def load(name):
    with open(os.path.join(TEMPLATES, name), encoding="utf-8") as f:
        return json.load(f)


def template_text(name, spec):
    with open(os.path.join(TEMPLATES, spec.get("file", name) + ".jinja"), encoding="utf-8") as f:
        return f.read()


def variables(spec, conv, tools, add_generation_prompt):
    """What apply_chat_template passes to render()."""
    v = {"messages": conv["messages"], "tools": tools if conv.get("tools") else None, "documents": None,
         "add_generation_prompt": add_generation_prompt}
    for tok in ("bos_token", "eos_token"):
        if spec.get(tok) is not None:
            v[tok] = spec[tok]
    v.update(spec.get("vars", {}))
    return v


def cases():
    templates = load("templates.json")["templates"]
    convs = load("conversations.json")
    snippets = load("snippets.json")["snippets"]
    out = []
    for name, spec in templates.items():
        text = template_text(name, spec)
        for cname, conv in convs["conversations"].items():
            for agp in (True, False):
                case = {"template": name, "conversation": cname, "add_generation_prompt": agp}
                case.update(render(text, variables(spec, conv, convs["tools"], agp)))
                out.append(case)
    for snip in snippets:
        case = {"snippet": snip["name"]}
        case.update(render(snip["template"], snip.get("vars", {})))
        out.append(case)
    return out


def smollm2_template(model):
    import gguf
    reader = gguf.GGUFReader(model)
    field = reader.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the default model (for SmolLM2's template)")
    ap.add_argument("--stdout", action="store_true", help="print the cases instead of writing the golden file")
    args = ap.parse_args()
    if not args.stdout:
        if os.path.exists(args.model):
            with open(os.path.join(TEMPLATES, "smollm2.jinja"), "w", encoding="utf-8") as f:
                f.write(smollm2_template(args.model))
        else:
            print(f"{args.model} not found: keeping tests/chat_templates/smollm2.jinja", file=sys.stderr)
    doc = {"about": "jinja2 " + jinja2.__version__ + " renderings of tests/chat_templates, made by "
                    "tests/golden/make_chat_template_golden.py; do not edit",
           "cases": cases()}
    text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    if args.stdout:
        sys.stdout.write(text)
        return
    with open(os.path.join(HERE, "chat_templates.json"), "w", encoding="utf-8") as f:
        f.write(text)
    n_err = sum(1 for c in doc["cases"] if "error" in c)
    print(f"wrote tests/golden/chat_templates.json: {len(doc['cases'])} cases, {n_err} of them errors")


if __name__ == "__main__":
    main()
