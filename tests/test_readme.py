"""README.md opens with the commands a newcomer runs, and CI runs exactly README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _code_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_opens_with_install_main_job_and_tests() -> None:
    blocks = _code_blocks((ROOT / "README.md").read_text())
    assert "pip install" in blocks[0]
    assert blocks[1] == "python train_ghn.py"
    assert blocks[2].startswith("python -m pytest")


def test_ci_runs_readme_test_command() -> None:
    test_command = _code_blocks((ROOT / "README.md").read_text())[2]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci], ".ci/run must run README's test command verbatim"
