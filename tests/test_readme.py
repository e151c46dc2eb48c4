"""README's two commands stay true: CI runs README's test command verbatim."""
from __future__ import annotations

from tests.helpers import REPO, readme_commands


def test_ci_runs_readme_test_command_verbatim():
    main_job, test_command = readme_commands()
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
    assert main_job.startswith("scripts/bootstrap.sh && ")
