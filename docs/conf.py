"""Sphinx configuration: the Markdown pages of docs/ (MyST), and a reference generated from the code at
every build (generate_reference.py), so the keys, run files and metrics it lists cannot drift from alignkit.
Build: sphinx-build -W -b html docs docs/_build (warnings fail the build; tests/test_docs.py runs it)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from generate_reference import write_reference  # noqa: E402

write_reference(Path(__file__).parent / "reference")

project = "alignkit"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
html_theme = "alabaster"
html_title = "alignkit"
suppress_warnings = ["myst.header"]  # pages moved from the README start at level 2 under their title
