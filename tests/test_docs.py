"""The documentation: the README's implementation table is the registry, every link resolves, the README stays short.

Links are read from README.md and docs/*.md outside code (indented or fenced blocks, inline code
spans). A relative link must name an existing path in the checkout, and an #anchor into a markdown
file must name one of its headings by GitHub's slug rules. External http(s) links are not fetched
(the tests run without a network); they must be well formed.
"""

import pathlib
import re
import urllib.parse

import pytest

import impls
from impls import registry

REPO = pathlib.Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 160

INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)


def builtin_names() -> list[str]:
    """impls.names() without the implementations that entry-point plugins add."""
    return [name for name in impls.names() if name in registry._REGISTRY]


def without_blocks(text: str) -> str:
    """The markdown with its fenced and indented code blocks blanked (a blank line inside a block keeps it open)."""
    text = re.sub(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", "", text, flags=re.M | re.S)
    kept, in_block, previous_blank = [], False, True
    for line in text.split("\n"):
        blank = line.strip() == ""
        in_block = (blank and in_block) or (
            not blank and line.startswith(("    ", "\t")) and (previous_blank or in_block)
        )
        kept.append("" if in_block else line)
        previous_blank = blank
    return "\n".join(kept)


def prose(text: str) -> str:
    """The markdown outside code: no code blocks, no inline code spans."""
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", without_blocks(text))


def headings(text: str) -> list[str]:
    """The ATX headings of a markdown text, outside code blocks, without their #s."""
    return [m.group(1).strip() for m in re.finditer(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", without_blocks(text), re.M)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    """Every anchor GitHub gives the headings of a markdown file; repeated headings get -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    for heading in headings(path.read_text()):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def links(path: pathlib.Path) -> list[str]:
    text = prose(path.read_text())
    return [m.group(1) for m in INLINE_LINK.finditer(text)] + [m.group(1) for m in REFERENCE_LINK.finditer(text)]


def readme_implementation_table(text: str) -> list[str]:
    """The names in the first column of the table under the README's '## Implementations' heading."""
    section = re.split(r"^## Implementations[ \t]*$", text, maxsplit=1, flags=re.M)
    assert len(section) == 2, "README.md has no '## Implementations' section"
    body = re.split(r"^#{1,2} ", section[1], maxsplit=1, flags=re.M)[0]
    rows = [line for line in body.splitlines() if line.lstrip().startswith("|")]
    return [m.group(1) for line in rows if (m := re.match(r"\s*\|\s*`([^`]+)`\s*\|", line))]


def test_the_readme_lists_every_builtin_implementation_in_registry_order():
    assert readme_implementation_table(README.read_text()) == builtin_names()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    dead = []
    for target in links(page):
        parsed = urllib.parse.urlsplit(target)
        if parsed.scheme or target.startswith("//"):
            continue  # external: checked for form below
        path_part, _, anchor = target.partition("#")
        path = (page.parent / urllib.parse.unquote(path_part)).resolve() if path_part else page
        if not path.exists():
            dead.append(f"{target}: no such file")
            continue
        if REPO not in path.parents and path != REPO:
            dead.append(f"{target}: outside the repository")
            continue
        if anchor and path.suffix == ".md" and anchor not in anchors(path):
            dead.append(f"{target}: no heading #{anchor} in {path.relative_to(REPO)}")
    assert not dead, "\n".join(dead)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_external_link_is_a_well_formed_http_url(page):
    bad = []
    for target in links(page):
        parsed = urllib.parse.urlsplit(target)
        if not (parsed.scheme or target.startswith("//")):
            continue
        host = parsed.hostname or ""
        if parsed.scheme not in ("http", "https") or not re.fullmatch(
            r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?\.[a-z]{2,}", host
        ):
            bad.append(target)
        elif re.search(r"[\s<>\"]", target):
            bad.append(target)
    assert not bad, f"malformed external links: {bad}"


def test_the_readme_is_at_most_160_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_every_docs_page_starts_with_a_title_and_a_summary():
    for page in PAGES[1:]:
        first, blank, summary = (page.read_text().splitlines() + ["", "", ""])[:3]
        assert first.startswith("# ") and blank == "" and summary.strip(), page.name
