"""The documentation site builds with `mkdocs build --strict`: every page in the menu, every
internal link and anchor resolves, every included file (results, notes, security) exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", "mkdocs.yml",
                           "--site-dir", str(site)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-5000:]
    configuration = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "tiers[].limits.max_body_bytes" in configuration  # the generated reference is in the page
    assert (site / "evaluation" / "results" / "index.html").exists()


def test_readme_results_are_rows_of_the_generated_results() -> None:
    """The README's headline table is copied from eval/results/results.md, row for row: one source."""
    results = (ROOT / "eval" / "results" / "results.md").read_text(encoding="utf-8").splitlines()
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    section = readme[readme.index("## Results"):]
    rows = [line for line in section[:section.index("## Two commands")] if line.startswith("| ")]
    assert len(rows) >= 4
    for row in rows:
        assert row in results, row


def test_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200
