"""Sphinx configuration of the course website (built by tools/build_site.py; see docs/site.md).

tools/build_site.py copies this folder into build/site-src/, next to the pages it
generates there (the home page from README.md, the executed notebooks, the docs),
and writes site.json beside it: the repository address, the commit and the
hardware the notebooks were executed on. Nothing here executes a notebook.
"""

import json
from pathlib import Path

SITE = json.loads((Path(__file__).parent / "site.json").read_text())

project = SITE["title"]
author = "the course authors"
copyright = "the course authors. Code Apache-2.0, data CC0"
language = "en"

extensions = [
    "myst_nb",                  # notebooks (with their stored outputs) and Markdown pages
    "sphinx-mathjax-offline",   # MathJax 3 served from the site itself, not from a CDN
]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3        # GitHub-style anchors, so links such as troubleshooting.md#2-bf16-on-a-t4 work

# The outputs are the ones computed once by `make test` (or `make site`): never execute here.
nb_execution_mode = "off"
nb_merge_streams = True
nb_output_stderr = "show"

exclude_patterns = ["_build", "_files", "site.json", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]   # a notebook may start at ## after its title cell

html_theme = "sphinx_book_theme"
html_title = SITE["title"]
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_favicon = "_static/favicon.svg"
html_copy_source = False        # no _sources/ copies (search reads the built pages)
html_show_sourcelink = False
html_theme_options = {
    "repository_url": SITE["repository"],
    "repository_branch": "main",
    "path_to_docs": "",         # build/site-src mirrors the repository layout
    "use_repository_button": True,
    "use_download_button": False,   # each lesson page has its own download links
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "extra_footer": SITE["footer_html"],
    "footer_content_items": ["copyright.html", "extra-footer.html"],
}
# Light by default (the plots are white). Also, with no mode set, the theme logs a console
# error in a browser profile that has never chosen one.
html_context = {"default_mode": "light"}
