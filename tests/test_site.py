"""The course website (build/site, from `make site` or `make test`) checked in a real browser.

Headless Chromium (the system's: Debian's `chromium` package, or $COURSE_CHROMIUM),
driven by Playwright, opens every page of the site served on 127.0.0.1 and checks
that it loads with no console error, no failed or outside request (the site
must work offline), every image loaded, every internal link resolves (anchors
included), and that search finds lesson 07. A full-page screenshot of each page
goes to build/screenshots/ (CI keeps it as an artifact).

Marked `browser`: `make test` runs it after building the site, the unit-test
step leaves it out. Without a browser, Playwright or a built site it skips with
the reason, except where COURSE_REQUIRE_BROWSER=1 (CI): there it fails.
"""

from __future__ import annotations

import functools
import html.parser
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "build" / "site"
SCREENSHOTS = ROOT / "build" / "screenshots"
REQUIRED = os.environ.get("COURSE_REQUIRE_BROWSER") == "1"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SKIP_PAGES = {"genindex.html"}   # Sphinx's empty index page: nothing of the course on it

pytestmark = pytest.mark.browser


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (COURSE_REQUIRE_BROWSER=1: the browser check must run here)")
    pytest.skip(f"{reason}; the browser check of the site is skipped")


def pages() -> list[str]:
    found = sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")
                   if not p.relative_to(SITE).as_posix().startswith("_"))
    return [p for p in found if p not in SKIP_PAGES]


def chromium_path() -> str | None:
    candidates = [os.environ.get("COURSE_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                  shutil.which("google-chrome")]
    return next((c for c in candidates if c and Path(c).exists()), None)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    if not (SITE / "index.html").exists():
        _unavailable(f"no built site in {SITE.relative_to(ROOT)} (run `make site`)")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(SITE)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def context(server):
    executable = chromium_path()
    if executable is None:
        _unavailable("no Chromium found (apt-get install chromium, or set COURSE_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[site]')")
    playwright = sync_playwright().start()
    # Playwright gives every launch a fresh temporary profile (its own --user-data-dir).
    browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    context.close()
    browser.close()
    playwright.stop()


class Visit:
    """One page, opened in a tab that refuses every request off 127.0.0.1 and records what went wrong."""

    def __init__(self, context, server: str, path: str):
        self.server = server
        self.problems: list[str] = []
        self.page = context.new_page()
        self.page.route("**/*", self._route)
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        self.page.goto(server + path, wait_until="load")
        missing = self.page.evaluate(_WAIT_FOR_IMAGES_AND_MATH)
        self.problems += [f"image not loaded: {src}" for src in missing]

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.server) or url.startswith("data:"):
            route.continue_()
        else:
            self.problems.append(f"request outside the site (must work offline): {url}")
            route.abort()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.page.close()


# Every image loaded (lazy ones too), and MathJax done typesetting; the images that failed.
_WAIT_FOR_IMAGES_AND_MATH = """async () => {
    const images = Array.from(document.images);
    images.forEach(i => { i.loading = "eager"; });
    await Promise.all(images.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
    return images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
}"""


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.lru_cache(maxsize=None)
def _fetch(url: str) -> tuple[int, frozenset[str]]:
    """HTTP status of a page of the site, and the ids its anchors can point to."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body, status = response.read(), response.status
    except urllib.error.HTTPError as exc:
        return exc.code, frozenset()
    ids = _Ids()
    if url.endswith((".html", "/")):
        ids.feed(body.decode("utf-8", "replace"))
    return status, frozenset(ids.ids)


def _broken_links(page, server: str) -> list[str]:
    broken = []
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    for href in sorted(set(hrefs)):
        if not href.startswith(server):
            continue   # Colab, GitHub: outside the site, not fetched offline
        target, fragment = urldefrag(href)
        if urlsplit(target).path.endswith("/search.html"):
            target = target.split("?")[0]
        status, ids = _fetch(target)
        if status != 200:
            broken.append(f"{href} -> HTTP {status}")
        elif fragment and unquote(fragment) not in ids:
            broken.append(f"{href} -> no anchor #{fragment}")
    return broken


def _screenshot(page, path: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / (path.removesuffix(".html").replace("/", "__") + ".png")), full_page=True,
                    animations="disabled")   # no sidebar caught mid-transition


def _lesson_problems(page, server: str, path: str) -> list[str]:
    """An Open in Colab link, a download link and where the outputs were computed."""
    name = path.removesuffix(".html") + ".ipynb"
    colab = page.eval_on_selector_all(f'a[href$="/blob/main/{name}"]', "links => links.map(a => a.href)")
    downloads = page.eval_on_selector_all('a[href$=".ipynb"]', "links => links.map(a => a.href)")
    boxes = page.locator("div.course-page-info")
    info = boxes.first.inner_text() if boxes.count() else ""
    problems = []
    if not any(href.startswith("https://colab.research.google.com/github/") for href in colab):
        problems.append("no Open in Colab link to this notebook")
    if not any(href.startswith(server) and href.endswith("/" + name.split("/")[-1]) for href in downloads):
        problems.append("no download link of this notebook")
    if not ("Outputs computed on" in info and "commit" in info):
        problems.append(f"does not say where its outputs were computed:\n{info}")
    text = page.locator("body").inner_text()
    for unwanted in ("site-packages/", str(ROOT) + "/", "Loading weights:"):
        if unwanted in text:
            line = next(l for l in text.splitlines() if unwanted in l)
            problems.append(f"shows what a reader should not see ({unwanted!r}): {line[:160]}")
    return problems


@pytest.mark.parametrize("path", pages() or ["index.html"])
def test_page_loads_cleanly_with_images_links_and_a_screenshot(context, server, path):
    with Visit(context, server, path) as visit:
        _screenshot(visit.page, path)
        problems = list(visit.problems)
        problems += [f"broken link: {b}" for b in _broken_links(visit.page, server)]
        if re.match(r"notebooks/(solutions/)?\d\d_", path):
            problems += _lesson_problems(visit.page, server, path)
        if not visit.page.title():
            problems.append("the page has no title")
    assert not problems, f"{path}:\n" + "\n".join(problems)


def test_navigation_lists_the_lessons_in_order(context, server):
    with Visit(context, server, "index.html") as visit:
        nav = visit.page.eval_on_selector_all("nav.bd-docs-nav a.reference.internal",
                                              "links => links.map(a => a.getAttribute('href'))")
        lessons_in_table = visit.page.eval_on_selector_all("article table a",
                                                           "links => links.map(a => a.getAttribute('href'))")
    lessons = [h for h in nav if re.match(r"notebooks/\d\d_", h)]
    assert len(lessons) == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))), nav
    assert lessons == sorted(lessons), f"navigation out of lesson order: {lessons}"
    assert nav.index(lessons[-1]) < nav.index("notebooks/solutions/index.html") < nav.index("docs/instructor.html")
    linked = [h.split("#")[0] for h in lessons_in_table if re.match(r"notebooks/\d\d_", h)]  # rows may link docs too
    assert linked == lessons, "the home page's lesson map links every lesson page"


def test_search_finds_lesson_07(context, server):
    with Visit(context, server, "search.html?q=NF4") as visit:
        visit.page.wait_for_selector("#search-results li a", timeout=30_000)
        results = visit.page.eval_on_selector_all("#search-results li a",
                                                  "links => links.map(a => a.getAttribute('href'))")
        _screenshot(visit.page, "search-NF4")
        problems = visit.problems
    assert any("07_nf4_from_scratch" in href for href in results), results
    assert not problems, problems
