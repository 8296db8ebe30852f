"""Every relative link in README.md and docs/*.md leads somewhere: a file, and a heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as -."""
    found: set[str] = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        n, candidate = 0, slug
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_the_pages_have_links_to_check():
    assert len(PAGES) > 1, "docs/ holds the design notes"
    assert all(relative_links(p) for p in PAGES), "each page links somewhere"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_an_existing_file_and_heading(page: Path):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT)}")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_anchors_follow_githubs_rule():
    page = ROOT / "README.md"
    assert {"quickstart", "what-a-202-means"} <= anchors(page)


def test_every_setting_is_documented_in_the_configuration_reference():
    from thumbline.settings import Settings

    doc = (ROOT / "docs" / "configuration.md").read_text()
    # a row may name a family: `THUMBLINE_KAFKA_SSL_CAFILE`, `_CERTFILE`, `_KEYFILE`
    named = set(re.findall(r"`(THUMBLINE_[A-Z0-9_]+)`", doc))
    for row in re.findall(r"^\|([^|]*)\|", doc, re.M):
        names = re.findall(r"`(THUMBLINE_[A-Z0-9_]+|_[A-Z0-9_]+)`", row)
        base = next((n for n in names if n.startswith("THUMBLINE_")), None)
        for suffix in (n for n in names if n.startswith("_") and base):
            named.add(base.rsplit("_", 1)[0] + suffix)
    missing = [n for n in Settings.model_fields if f"THUMBLINE_{n.upper()}" not in named]
    assert missing == []
