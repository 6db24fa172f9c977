"""Sphinx configuration: the user guide (docs/guide/*.md) and the API reference
(from the docstrings of the installed pyqmem).

Build it (warnings are errors, as in .ci/run):

    python -m pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs/site build-docs/html

The guide pages stay where they are, beside the design notes; each page of
docs/site/guide/ includes one of them (MyST's ``{include}``).  Links from a guide
page to another guide page stay links within the site; links to anything else in
the repository (the design notes, examples/, the README) become links to the
repository, since those files are not part of the site.
"""

import importlib
import os
import re

import pyqmem

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
GUIDE = os.path.join(REPO_ROOT, "docs", "guide")


def _repository_url():
    """The Homepage of pyproject.toml's [project.urls] (the GitHub repository)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return "https://github.com/pyqmem/pyqmem"
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Homepage"]


REPOSITORY = _repository_url()

project = "pyqmem"
author = "The pyqmem authors"
copyright = "The pyqmem authors"
release = pyqmem.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# The docstrings name parameters and other objects in single backquotes
# (`timeout`, `RetryPolicy`): as Python cross-references they link where there is
# something to link to and show as code otherwise.  Nitpicky stays off: a name that
# does not resolve (a parameter, a stdlib type) is not a mistake.
default_role = "py:obj"
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

myst_heading_anchors = 3  # GitHub's anchors: guide.md#a-heading links work in both

html_theme = "furo"
try:
    import furo  # noqa: F401
except ImportError:
    html_theme = "alabaster"
html_title = f"pyqmem {release}"
html_static_path = []


# ----- the guide pages ------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s#]+)(#[^)\s]*)?\)")


def _link_outside_the_guide(match):
    target, anchor = match.group(1), match.group(2) or ""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
        return match.group(0)  # a URL, or a site path
    path = os.path.normpath(os.path.join(GUIDE, target))
    if os.path.dirname(path) == GUIDE and path.endswith(".md"):
        return match.group(0)  # another guide page: a page of this site too
    rel = os.path.relpath(path, REPO_ROOT).replace(os.sep, "/")
    kind = "tree" if os.path.isdir(path) else "blob"
    return f"]({REPOSITORY}/{kind}/main/{rel}{anchor})"


def _guide_page_read(app, relative_path, parent_docname, content):
    """include-read: links from a guide page to files outside the guide point to
    the repository."""
    path = os.path.normpath(os.path.join(app.srcdir, str(relative_path)))
    if os.path.dirname(path) == GUIDE:
        content[0] = _LINK.sub(_link_outside_the_guide, content[0])


def _check_every_guide_page_is_in_the_site(app):
    """Each docs/guide/*.md needs its page in docs/site/guide/ (which includes it)."""
    missing = sorted(
        name
        for name in os.listdir(GUIDE)
        if name.endswith(".md")
        and not os.path.exists(
            os.path.join(HERE, "guide", "index.md" if name == "README.md" else name)
        )
    )
    if missing:
        from sphinx.util import logging

        logging.getLogger(__name__).warning(
            "docs/guide pages without a page in docs/site/guide: %s", ", ".join(missing)
        )


# ----- the reference ----------------------------------------------------------------

# Classes a user gets from pyqmem rather than constructs: their constructor's
# signature is the library's business (Topic.consumer() and get() make them).
_MADE_BY_PYQMEM = {"pyqmem.Consumer", "pyqmem.GroupConsumer", "pyqmem.Message"}
# A Cython signature embedded in a docstring: "(self, Py_ssize_t partition, ...)".
_C_TYPE = re.compile(r"\b(?:Py_ssize_t|u?int\d+_t|double|bint|str|object)\s+(?=\w)")
_SELF = re.compile(r"^\(self(, |\))")


def _signature(app, what, name, obj, options, signature, return_annotation):
    """autodoc-process-signature: no constructor signature where users do not
    construct (the classes above, the backend protocols); the compiled classes'
    signatures without C types and without ``self``."""
    if not signature:
        return None  # nothing to change (and Sphinx 9 cannot replace a missing one)
    if what in ("class", "exception") and (
        name in _MADE_BY_PYQMEM or getattr(obj, "_is_protocol", False)
    ):
        return "", None
    if signature and _core_object(obj):
        signature = _SELF.sub(lambda m: "(" if m.group(1) == ", " else "()", signature)
        signature = _C_TYPE.sub("", signature)
    return signature, return_annotation


def _core_object(obj):
    """True for the compiled core's classes and their methods."""
    module = getattr(obj, "__module__", None) or getattr(
        getattr(obj, "__objclass__", None), "__module__", None
    )
    return module == "pyqmem._core"


def _full_base_names(app, name, obj, options, bases):
    """autodoc-process-bases: a base class from outside pyqmem named in full
    (``queue.Full``, not ``Full`` beside pyqmem.Full; ``_queue.Empty`` as
    ``queue.Empty``)."""
    for i, base in enumerate(bases):
        module = getattr(base, "__module__", "builtins")
        if not isinstance(base, type) or module in ("builtins", "typing"):
            continue
        if module.split(".")[0] == "pyqmem":
            continue
        public = module.lstrip("_")
        try:
            if getattr(importlib.import_module(public), base.__qualname__, None) is base:
                module = public
        except ImportError:
            pass
        bases[i] = f":py:class:`{module}.{base.__qualname__}`"


def setup(app):
    app.connect("include-read", _guide_page_read)
    app.connect("builder-inited", _check_every_guide_page_is_in_the_site)
    app.connect("autodoc-process-signature", _signature)
    app.connect("autodoc-process-bases", _full_base_names)
