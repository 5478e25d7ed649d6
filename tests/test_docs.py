"""The built documentation site (``make docs-check``, after ``make docs``).

* every public name of every public module is in the API reference (the built
  ``objects.inv`` against ``docs/api_modules.py``'s list);
* no internal link of any page is broken (file and ``#anchor``);
* headless Chromium (the Debian ``chromium`` package) renders the index and the
  ``tnlib.tt`` API page, both show ``from_dense``, the links in the rendered pages
  resolve, and a screenshot of each is kept in ``docs/_build/screenshots/``.

Slow and needing a built site, so marked ``slow``: ``make test`` leaves it out.
"""

from __future__ import annotations

import html.parser
import importlib
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "docs" / "_build"
HTML = BUILD / "html"
SHOTS = BUILD / "screenshots"


@pytest.fixture(scope="module", autouse=True)
def built():
    if not (HTML / "index.html").is_file():
        pytest.fail("no built site: run `make docs` first (make docs-check does)")


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])
        if tag in ("img", "script") and attrs.get("src"):
            self.hrefs.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def _parse(text: str) -> _Links:
    p = _Links()
    p.feed(text)
    return p


def _broken(page: Path, text: str) -> list[str]:
    bad = []
    for href in _parse(text).hrefs:
        parts = urllib.parse.urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
            continue
        target = page if not parts.path else (page.parent / urllib.parse.unquote(parts.path))
        target = target.resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            bad.append(f"{page.relative_to(HTML)}: {href}")
        elif parts.fragment and target.suffix == ".html":
            if parts.fragment not in _parse(target.read_text(errors="replace")).ids:
                bad.append(f"{page.relative_to(HTML)}: {href} (no such anchor)")
    return bad


def test_api_reference_has_every_public_name():
    from sphinx.util.inventory import InventoryFile

    sys.path.insert(0, str(ROOT / "docs"))
    from api_modules import MODULES, is_reexport, public_names

    with open(HTML / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)
    documented = {name for domain, entries in inv.items() if domain.startswith("py:")
                  for name in entries}
    missing = []
    for modname in MODULES:
        module = importlib.import_module(modname)
        assert modname in documented, modname
        page = (HTML / "api" / f"{modname}.html").read_text()
        for name in public_names(module):
            obj = getattr(module, name)
            if isinstance(obj, type(sys)):  # a submodule: its own page
                assert obj.__name__ in documented, obj.__name__
                continue
            # Indexed under this module, or shown here and indexed where it is defined.
            home = f"{getattr(obj, '__module__', '')}.{name}"
            indexed = f"{modname}.{name}" in documented or (
                is_reexport(modname, name, obj) and home in documented)
            if not indexed or f'id="{modname}.{name}"' not in page and name not in page:
                missing.append(f"{modname}.{name}")
    assert not missing, f"public names missing from the API reference: {missing}"


def test_no_broken_internal_links():
    bad = []
    for page in sorted(HTML.rglob("*.html")):
        if "_modules" in page.parts:  # viewcode's source pages
            continue
        bad += _broken(page, page.read_text(errors="replace"))
    assert not bad, bad[:20]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("headless Chromium is not installed (Debian: apt-get install chromium)")


@pytest.mark.parametrize("page", ["index.html", "api/tnlib.tt.html"])
def test_page_in_headless_chromium(page, tmp_path):
    chromium = _chromium()
    path = HTML / page
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", path.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "from_dense" in dom.stdout, f"{page} does not show from_dense"
    assert _broken(path, dom.stdout) == []
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / (page.replace("/", "_").removesuffix(".html") + ".png")
    res = subprocess.run([*flags, "--window-size=1280,1600", f"--screenshot={shot}",
                          path.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 10_000, shot
