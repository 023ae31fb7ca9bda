"""The README and the manual: short, current, free of development history, figures from their files."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.core

#: Words that speak of the project's own past in a way a user cannot place (date it instead).
DIARY = re.compile(r"session [0-9]|this session|earlier session|session's machine", re.I)


def test_no_development_diary_in_the_product():
    hits = []
    for where in ("README.md", "docs", "src", "scripts", "benchmarks"):
        root = ROOT / where
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and p.suffix in (".md", ".txt", ".py", ".html", ".json", ".yml")]
        for p in files:
            for k, line in enumerate(p.read_text(errors="ignore").splitlines(), 1):
                if DIARY.search(line):
                    hits.append(f"{p.relative_to(ROOT)}:{k}: {line.strip()[:100]}")
    assert not hits, "date it (YYYY-MM-DD) or name the commit instead:\n" + "\n".join(hits)


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    first_block = text.split("```", 2)[1]
    assert "pip install . && ferroute route examples/" in first_block
    assert 'pip install -e ".[test]" && python -m pytest -q' in first_block
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]" && python -m pytest -q' in ci


def test_figure_tables_match_the_files_they_come_from():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "render_docs.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_readme_link_exists():
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), target
