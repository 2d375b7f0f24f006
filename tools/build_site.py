"""Build the course website from the executed notebooks: `make site` (see docs/site.md).

    python tools/build_site.py                    # needs an executed copy of every notebook
    python tools/build_site.py --execute-missing  # first executes the missing or stale ones (make site)
    python tools/build_site.py --allow-missing    # development: pages without outputs, clearly marked

The executed copies come from build/executed/ (written by `make test` through
`tools/run_all.py --copy-only` + `pytest --nbmake --overwrite` + `tools/run_all.py --split`,
or by `tools/run_all.py`; a lesson and its solution run in one kernel), with build/executed/run_info.json saying which hardware
and which commit computed them. Nothing is executed here unless a copy is
missing and --execute-missing was given. COURSE_REQUIRE_EXECUTED=1 (CI) makes a
missing, stale or failed copy an error whatever the options.

Steps: generate the Sphinx sources in build/site-src/ (site/ holds conf.py and
static files; the home page is made from README.md now, so it cannot drift;
the notebooks and docs keep the repository's layout so that their links work),
then `sphinx-build` into build/site/.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "build" / "executed"
SOURCE = ROOT / "build" / "site-src"
DOCTREES = ROOT / "build" / "site-doctrees"
OUT = ROOT / "build" / "site"
SITE_DIR = ROOT / "site"
FILES = "_files"          # under SOURCE: the downloadable notebooks (not pages)
DOC_ORDER = ["instructor.md", "troubleshooting.md", "measurements.md"]
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)[ \t]*\n?")
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
CARRIAGE_RETURN = re.compile(r"[^\n]*\r(?=[^\n])")
BACKSPACE = re.compile(r"[^\n]\x08")
# What a reader should not see on a page: the libraries' loading bars (a model load prints three), and the
# machine's paths in warnings (kept as the package-relative path: `peft/tuners/lora/bnb.py:377: UserWarning`).
LOADING_BAR = re.compile(r"^(Loading weights|Converting and de-quantizing GGUF tensors\.*|Writing model shards)"
                         r":[^\n]*\|[^\n]*(\n|$)", re.M)
MACHINE_PATH = re.compile(r"(?<![\w/.])/[^\s:'\"]*/(site-packages|dist-packages)/")

sys.path.insert(0, str(ROOT / "tools"))
from run_all import load_run_info  # noqa: E402


class SiteError(Exception):
    pass


def repository_url() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")


def git_commit() -> str:
    try:
        result = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30)
        return result.stdout.strip()[:10] if result.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- the executed copies

def lessons() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def solutions() -> list[Path]:
    return sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*.ipynb"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _sources(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def copy_status(stored: Path, executed_dir: Path) -> str:
    """ok, missing, not executed, stale (the stored notebook changed since) or failed (an error output)."""
    copy = executed_dir / relative(stored)
    if not copy.exists():
        return "missing"
    executed = nbformat.read(copy, as_version=4)
    if not any(c.cell_type == "code" and c.get("execution_count") for c in executed.cells):
        return "not executed"
    if _sources(executed) != _sources(nbformat.read(stored, as_version=4)):
        return "stale"
    for cell in executed.cells:
        expected = "raises-exception" in cell.get("metadata", {}).get("tags", [])
        if cell.cell_type == "code" and not expected and any(o.output_type == "error" for o in cell.outputs):
            return "failed"
    return "ok"


def execute(paths: list[Path], executed_dir: Path) -> None:
    print(f"make site: {len(paths)} notebook(s) have no up-to-date executed copy; executing them first "
          f"with tools/run_all.py (on CPU this takes minutes; the whole course about 20 minutes):", flush=True)
    for path in paths:
        print(f"  {relative(path)}", flush=True)
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    command = [sys.executable, str(ROOT / "tools" / "run_all.py"), "--out", str(executed_dir),
               *[str(p) for p in paths]]
    if subprocess.run(command, cwd=ROOT, env=env).returncode != 0:
        raise SiteError("executing the notebooks failed (see above); their executed copies are in "
                        f"{executed_dir} for inspection")


# --------------------------------------------------------------------------- links

def rewrite_links(text: str, origin: str, pages: set[str], repo: str) -> str:
    """Rewrite the relative links of a page whose repository path is `origin`.

    A link to another page of the site stays as it is (the sources keep the
    repository's layout); a folder with an index page gets its index; any other
    file of the repository becomes a link to it on GitHub.
    """
    base = posixpath.dirname(origin)

    def fix(match: re.Match) -> str:
        target = match.group(2)
        if SCHEME.match(target) or target.startswith(("#", "/", "<")):
            return match.group(0)
        path, hash_, fragment = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(base, path)) if path else origin
        if resolved in pages:
            return match.group(0)
        if f"{resolved}/index.md" in pages:
            return f"{match.group(1)}{path.rstrip('/')}/index.md{hash_}{fragment}{match.group(3)}"
        if (ROOT / resolved).exists() and not resolved.startswith(".."):
            kind = "tree" if (ROOT / resolved).is_dir() else "blob"
            return f"{match.group(1)}{repo}/{kind}/main/{resolved}{hash_}{fragment}{match.group(3)}"
        return match.group(0)   # left for Sphinx to report

    return LINK.sub(fix, text)


def coalesce_streams(outputs: list) -> list:
    """Join consecutive stream outputs and apply their carriage returns, as Jupyter shows them.

    A progress bar stores every update as `\\r...`; Jupyter displays only the last state of each
    line, and so does the site (the same rule as nbconvert's coalesce_streams).
    """
    merged: list = []
    for output in outputs:
        if (output.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == output.name):
            merged[-1].text += output.text
        else:
            merged.append(output)
    for output in merged:
        if output.output_type == "stream":
            text = CARRIAGE_RETURN.sub("", output.text)
            while BACKSPACE.search(text):
                text = BACKSPACE.sub("", text)
            output.text = reader_text(text, output.name)
    return [o for o in merged if o.output_type != "stream" or o.text.strip()]


def reader_text(text: str, stream: str = "stderr") -> str:
    """A cell's output stream as a page shows it: no machine paths (the repository's folder is left out, the
    home folder is `~`: lesson 10 prints its run folders), and on stderr no library loading bars (LOADING_BAR)."""
    if stream == "stderr":
        text = MACHINE_PATH.sub("", LOADING_BAR.sub("", text))
    return text.replace(str(ROOT) + "/", "").replace(str(Path.home()) + "/", "~/")


# --------------------------------------------------------------------------- run information

def hardware_line(run: dict) -> str:
    if run.get("device") == "cuda":
        machine = f"{run['device_name']} ({run['memory_gib']} GiB), CPU {run['cpu_model']}"
    elif run.get("device") == "mps":
        machine = f"{run['device_name']} ({run['memory_gib']} GiB)"
    else:
        machine = f"CPU only: {run['cpu_model']}, {run['cpu_count']} cores, {run['memory_gib']} GiB RAM"
    return f"{machine}; torch {run['torch']}, Python {run['python']}"


def commit_text(run: dict) -> str:
    return f"`{run['commit_short']}`" + (" (with local changes)" if run.get("local_changes") else "")


def run_of(info: dict, name: str) -> dict | None:
    entry = info.get("notebooks", {}).get(name)
    return info.get("runs", {}).get(entry["run"]) if entry else None


# --------------------------------------------------------------------------- pages

def write(path: Path, text: str | bytes) -> None:
    """Write only when the content changed, so Sphinx rebuilds only what changed."""
    data = text.encode() if isinstance(text, str) else text
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def notebook_page(stored: Path, status: str, info: dict, executed_dir: Path, pages: set[str], repo: str,
                  solution: bool) -> tuple[str, bytes, dict[str, bytes]]:
    """The page's notebook (executed copy, or the stored one) with the info box under its title."""
    name = relative(stored)
    has_copy = status in ("ok", "stale", "failed")
    notebook = nbformat.read(executed_dir / name if has_copy else stored, as_version=4)
    depth = name.count("/")
    up = "../" * depth
    clean_file = f"{FILES}/clean/{name}"
    executed_file = f"{FILES}/executed/{name}"
    files = {clean_file: stored.read_bytes()}
    owner_repo = repo.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{owner_repo}/blob/main/{name}"

    links = [f"[![Open in Colab]({up}_static/colab-badge.svg)]({colab})",
             f"{{download}}`Download the notebook <{up}{clean_file}>`"]
    if has_copy:
        files[executed_file] = (executed_dir / name).read_bytes()
        links.append(f"{{download}}`with these outputs <{up}{executed_file}>`")
    lines = [" · ".join(links), ""]
    run = run_of(info, name)
    warning = False
    if status == "ok" and run:
        lines.append(f"Outputs computed on **{hardware_line(run)}**; commit {commit_text(run)}, "
                     f"{run['started']} ({run['runner']}).")
    elif status in ("missing", "not executed"):
        warning = True
        lines.append("**Not yet executed**: this page shows the notebook without its outputs. "
                     "`make site` executes it first.")
    else:
        warning = True
        what = ("**Outputs out of date**: the notebook changed after these outputs were computed"
                if status == "stale" else "**Execution failed**: a cell raised an error when these outputs were computed")
        where = f" on **{hardware_line(run)}**; commit {commit_text(run)}" if run else ""
        lines.append(f"{what}{where}. `make site` executes it again.")
    css = "course-page-info course-page-warning" if warning else "course-page-info"
    box = f":::{{container}} {css}\n" + "\n".join(lines) + "\n:::\n"

    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source, name, pages, repo)
        elif cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)
    first = notebook.cells[0]
    source = BADGE.sub("", first.source).lstrip("\n")
    title = re.search(r"^# .*$", source, re.M)
    if first.cell_type != "markdown" or not title:
        raise SiteError(f"{name}: the first cell should be Markdown with the `# ` title")
    heading = title.group(0)
    if solution:
        heading = "# Solutions: " + heading[2:]
    first.source = source[:title.start()] + heading + "\n\n" + box + source[title.end():]
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3",
                                               "language": "python"})
    return name, nbformat.writes(notebook).encode(), files


def readme_sections() -> tuple[str, str, dict[str, str]]:
    """The README's title, its introduction, and its `## ` sections by heading."""
    text = (ROOT / "README.md").read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    head, sections = parts[0], dict(zip(parts[1::2], parts[2::2]))
    title = re.search(r"^# (.+)$", head, re.M)
    if not title or "The lessons" not in sections:
        raise SiteError("README.md needs a `# ` title and a `## The lessons` section (the home page is made from them)")
    return title.group(1).strip(), head[title.end():].strip(), sections


def home_page(info: dict, lesson_names: list[str], docs: list[str], pages: set[str], repo: str,
              site_commit: str) -> str:
    title, intro, sections = readme_sections()
    runs = [info["runs"][r] for r in sorted({e["run"] for e in info.get("notebooks", {}).values()})
            if r in info.get("runs", {})]
    if runs:
        computed = "; ".join(f"**{hardware_line(r)}** (commit {commit_text(r)}, {r['started']})" for r in runs)
        about = (f"Every lesson page below shows its outputs and plots exactly as executed on {computed}. "
                 f"This site was built from commit `{site_commit}`.")
    else:
        about = f"No lesson has been executed for this build. This site was built from commit `{site_commit}`."
    body = [f"# {title}", "", intro, "",
            ":::{container} course-page-info", about,
            f"The course's source: [{repo.removeprefix('https://')}]({repo}). "
            "Run it yourself: each lesson page has an *Open in Colab* button and a download link.",
            ":::", "",
            "## The lessons", sections["The lessons"].strip(), ""]
    if "Open in Colab" in sections:
        body += ["## Open in Colab", sections["Open in Colab"].strip(), ""]
    body += ["## For instructors", "",
             "\n".join(f"- [{(ROOT / 'docs' / d).read_text().splitlines()[0].lstrip('# ')}](docs/{d})"
                       for d in docs), ""]
    text = rewrite_links("\n".join(body), "README.md", pages, repo)
    toctrees = [("Lessons", [n.removesuffix(".ipynb") for n in lesson_names]),
                ("Solutions", ["notebooks/solutions/index"]),
                ("For instructors", [f"docs/{d.removesuffix('.md')}" for d in docs])]
    for caption, entries in toctrees:
        text += f"\n```{{toctree}}\n:hidden:\n:caption: {caption}\n\n" + "\n".join(entries) + "\n```\n"
    return text


def notebook_title(path: Path) -> str:
    cells = nbformat.read(path, as_version=4).cells
    title = re.search(r"^# (.+)$", cells[0].source, re.M) if cells else None
    return title.group(1).strip() if title else path.stem.replace("_", " ")


def solutions_index(solution_names: list[str]) -> str:
    rows = "\n".join(f"- [{notebook_title(ROOT / n)}]({Path(n).name})" for n in solution_names)
    entries = "\n".join(Path(n).stem for n in solution_names)
    return ("# Worked solutions\n\nEach lesson's exercises, solved and executed. The lesson pages show the "
            "exercise cells as a learner finds them, with their self-checks saying \"not attempted yet\"; "
            "these pages show the same notebooks with the exercises done.\n\n"
            f"{rows}\n\n```{{toctree}}\n:hidden:\n\n{entries}\n```\n")


def doc_order() -> list[str]:
    names = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    return [n for n in DOC_ORDER if n in names] + [n for n in names if n not in DOC_ORDER]


# --------------------------------------------------------------------------- build

def generate(executed_dir: Path, statuses: dict[Path, str]) -> tuple[int, dict]:
    repo = repository_url()
    info = load_run_info(executed_dir)
    site_commit = git_commit()
    docs = doc_order()
    lesson_names = [relative(p) for p in lessons()]
    solution_names = [relative(p) for p in solutions()]
    pages = set(lesson_names + solution_names) | {f"docs/{d}" for d in docs} | {"notebooks/solutions/index.md"}

    wanted: dict[str, bytes] = {}
    for path in (SITE_DIR).rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            wanted[path.relative_to(SITE_DIR).as_posix()] = path.read_bytes()
    for stored in lessons() + solutions():
        name, data, files = notebook_page(stored, statuses[stored], info, executed_dir, pages, repo,
                                          solution=stored.parent.name == "solutions")
        wanted[name] = data
        wanted.update(files)
    for doc in docs:
        wanted[f"docs/{doc}"] = rewrite_links((ROOT / "docs" / doc).read_text(), f"docs/{doc}", pages, repo).encode()
    wanted["notebooks/solutions/index.md"] = solutions_index(solution_names).encode()
    wanted["index.md"] = home_page(info, lesson_names, docs, pages, repo, site_commit).encode()

    runs = [info["runs"][e["run"]] for e in info.get("notebooks", {}).values() if e["run"] in info.get("runs", {})]
    run = runs[0] if runs else None
    footer = f"Built from commit <code>{site_commit}</code>."
    if run:
        footer += (f" Lesson outputs computed on {hardware_line(run)}, commit <code>{run['commit_short']}</code>"
                   f"{' (with local changes)' if run.get('local_changes') else ''}, {run['started']}.")
    wanted["site.json"] = json.dumps({
        "title": readme_sections()[0], "repository": repo, "commit": site_commit, "footer_html": footer,
    }, indent=1).encode()

    SOURCE.mkdir(parents=True, exist_ok=True)
    for path in sorted(SOURCE.rglob("*"), reverse=True):   # drop what no longer belongs
        rel = path.relative_to(SOURCE).as_posix()
        if path.is_file() and rel not in wanted:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for rel, data in wanted.items():
        write(SOURCE / rel, data)
    return len(pages) + 1, info


def sphinx_build() -> None:
    # Sphinx keeps the pages of sources that are gone (a renamed lesson); the site is rebuilt whole instead.
    shutil.rmtree(OUT, ignore_errors=True)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(DOCTREES), "-W", "--keep-going",
               str(SOURCE), str(OUT)]
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise SiteError("sphinx-build reported warnings or errors (above); the site is in " + str(OUT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executed", type=Path, default=EXECUTED, help="the executed copies (default build/executed)")
    parser.add_argument("--execute-missing", action="store_true",
                        help="execute the notebooks whose executed copy is missing, stale or failed (make site)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="development only: build pages without outputs for them, clearly marked")
    parser.add_argument("--require-executed", action="store_true",
                        help="fail if any executed copy is missing, stale or failed (also COURSE_REQUIRE_EXECUTED=1)")
    args = parser.parse_args(argv)
    require = args.require_executed or os.environ.get("COURSE_REQUIRE_EXECUTED") == "1"
    executed_dir = args.executed.resolve()
    start = time.perf_counter()
    try:
        notebooks = lessons() + solutions()
        statuses = {p: copy_status(p, executed_dir) for p in notebooks}
        bad = {p: s for p, s in statuses.items() if s != "ok"}
        if bad and args.execute_missing and not require:
            execute(list(bad), executed_dir)
            statuses = {p: copy_status(p, executed_dir) for p in notebooks}
            bad = {p: s for p, s in statuses.items() if s != "ok"}
        if bad:
            listing = "\n".join(f"  {relative(p)}: {s}" for p, s in bad.items())
            if require or not args.allow_missing:
                raise SiteError(f"no up-to-date executed copy in {executed_dir} of:\n{listing}\n"
                                "`make site` executes them; `make test` executes all of them and builds the site.")
            print(f"WARNING: building without up-to-date executed copies of {len(bad)} notebook(s), "
                  f"marked on their pages (--allow-missing):\n{listing}", flush=True)
        count, info = generate(executed_dir, statuses)
        sphinx_build()
    except SiteError as exc:
        print(f"build_site: {exc}", file=sys.stderr)
        return 1
    used = sorted({e["run"] for e in info.get("notebooks", {}).values()})
    machines = {hardware_line(info["runs"][r]) for r in used if r in info["runs"]}
    print(f"site: {count} pages ({len(lessons())} lessons, {len(solutions())} solutions) in "
          f"{OUT.relative_to(ROOT)}/ in {time.perf_counter() - start:.0f} s; outputs from "
          f"{', '.join(sorted(machines)) or 'no execution'}; open {OUT.relative_to(ROOT)}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
