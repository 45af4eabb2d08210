#!/usr/bin/env python3
"""Live jinja2 renderings for tests/chat_template_spec.lua: prints the same
cases as tests/golden/make_chat_template_golden.py (JSON on stdout), rendered
now by the jinja2 installed here, so the spec checks lrun against the library
itself and not only against the committed golden file. CI installs jinja2
(.ci/run installs it because this file imports it)."""
import os
import sys

import jinja2  # noqa: F401 - fail here, with ImportError, when jinja2 is missing

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden"))
import make_chat_template_golden  # noqa: E402

sys.argv = [sys.argv[0], "--stdout"]
make_chat_template_golden.main()
