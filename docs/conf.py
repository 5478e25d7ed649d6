"""Sphinx configuration of tnlib's documentation site (``make docs``).

The API reference is generated at build time (:func:`write_api_pages`): one page per
public module, one autodoc entry per public name (the module's ``__all__``, else its
own non-underscore names), so nothing public can be left out;
``tests/test_docs.py`` checks the built inventory against the same list.

Why Sphinx rather than mkdocs-material + mkdocstrings: autodoc with napoleon reads the
Google-style docstrings as they are written; ``-W`` makes every docstring markup
problem and every ambiguous cross-reference a build failure; matplotlib's own plot
directive runs the tutorials' code at build time and embeds the figures it draws, with
no notebook toolchain; and the generated API pages are plain files a test can hold to
the modules' ``__all__``. mkdocs 1.x, which mkdocs-material builds on, is no longer
maintained.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

from api_modules import MODULES, is_reexport, public_names  # noqa: E402

import tnlib  # noqa: E402

project = "tnlib"
author = "The tnlib authors"
copyright = "the tnlib authors; Apache-2.0"  # noqa: A001
release = version = tnlib.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "matplotlib.sphinxext.plot_directive",
    "myst_parser",  # the README's tables and benchmarks/README.md, included verbatim
]
source_suffix = {".rst": "restructuredtext"}
html_theme = "furo"
html_title = f"tnlib {release}"
exclude_patterns = ["_build", "README.md"]
suppress_warnings: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Tutorials: the code in `.. plot::` blocks runs at build time; its figures are embedded.
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 96)]
plot_rcparams = {"figure.figsize": (6.0, 3.6)}


def _kind(obj) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if callable(obj):
        return "autofunction"
    if inspect.ismodule(obj):
        return "module"
    return "autodata"


def write_api_pages() -> None:
    out = HERE / "api"
    out.mkdir(exist_ok=True)
    index = ["API reference", "=============", "",
             "Every public name of every public module, from the docstrings.", "",
             ".. toctree::", "   :maxdepth: 1", ""]
    for modname in MODULES:
        module = importlib.import_module(modname)
        index.append(f"   {modname}")
        lines = [f"``{modname}``", "=" * (len(modname) + 4), "",
                 f".. automodule:: {modname}", "   :no-members:", ""]
        for name in public_names(module):
            obj = getattr(module, name)
            kind = _kind(obj)
            if kind == "module":
                lines += [f"- :mod:`{name} <{obj.__name__}>`", ""]
                continue
            if kind == "autodata":  # constants: their type's docstring is not theirs
                lines += [f".. py:data:: {name}",  # automodule set the module
                          f"   :type: {type(obj).__name__}", "",
                          f"   See the module documentation of :mod:`{modname}`.", ""]
                continue
            lines += [f".. {kind}:: {modname}.{name}"]
            if kind == "autoclass":
                lines += ["   :members:", "   :show-inheritance:"]
            if is_reexport(modname, name, obj) or f"{modname}.{name}" in MODULES:
                lines.append("   :no-index:")  # indexed once, where it is defined
            lines.append("")
        text = "\n".join(lines)
        page = out / f"{modname}.rst"
        if not page.exists() or page.read_text() != text:
            page.write_text(text)
    (out / "index.rst").write_text("\n".join(index) + "\n")


write_api_pages()
