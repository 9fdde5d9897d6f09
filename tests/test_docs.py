"""Cross-references stay true: every section a file cites exists, every relative link of the docs resolves, no file cites a missing DESIGN.md."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = {"README": "README.md", "docs/ARCHITECTURE.md": "docs/ARCHITECTURE.md", "docs/RESULTS.md": "docs/RESULTS.md"}
# A citation reads: README, "Section" / docs/ARCHITECTURE.md, "Section" (the quoted words of a heading).
CITATION = re.compile(r'(README|docs/ARCHITECTURE\.md|docs/RESULTS\.md),\s+"([^"]+)"')
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)]*))?\)")


def text_files():
    for top in ("paddlemix", "tests", "scripts", "benchmarks", "docs", ".ci"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith((".py", ".sh", ".md", ".json", ".html", ".txt")) or top == ".ci":
                    yield os.path.join(folder, name)
    for name in ("README.md", "requirements.txt", "requirements-lock.txt", "setup.py", "train.sh", "pytest.ini"):
        yield os.path.join(ROOT, name)


def headings(doc):
    with open(os.path.join(ROOT, DOCS[doc]), encoding="utf-8") as f:
        return {line.lstrip("#").strip() for line in f if line.startswith("#")}


def test_every_cited_section_exists():
    missing = []
    for path in text_files():
        if path == os.path.abspath(__file__):
            continue
        text = open(path, encoding="utf-8").read()
        for doc, section in CITATION.findall(text.replace("\n# ", " ").replace("\n", " ")):
            if not any(h == section or h.startswith(section) for h in headings(doc)):
                missing.append(f"{os.path.relpath(path, ROOT)}: {doc}, \"{section}\"")
        if "DESIGN.md" in text:
            missing.append(f"{os.path.relpath(path, ROOT)}: cites DESIGN.md, which is not in the repository")
    assert missing == []


def anchors(path):
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    with open(path, encoding="utf-8") as f:
        return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-") for line in f
                if line.startswith("#")}


@pytest.mark.parametrize("doc", sorted(set(DOCS.values())))
def test_relative_links_resolve(doc):
    path = os.path.join(ROOT, doc)
    broken = []
    for target, anchor in LINK.findall(open(path, encoding="utf-8").read()):
        if "://" in target:
            continue
        resolved = os.path.join(os.path.dirname(path), target) if target else path
        if not os.path.exists(resolved) or anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            broken.append(f"{target}#{anchor}")
    assert broken == []
