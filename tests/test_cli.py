"""The `search` command as a user runs it: installed console script, exit codes, one-line errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from objectives import PRESETS, count_params

SEARCH = shutil.which("search", path=str(__import__("pathlib").Path(sys.executable).parent))


def run(*args, check=False):
    assert SEARCH, "the `search` console script is not installed next to this Python"
    return subprocess.run([SEARCH, *args], capture_output=True, text=True, check=check, timeout=120)


def test_help_lists_commands():
    out = run("--help", check=True).stdout
    import re
    # Each command on its own line of the command list (not just a word of the description).
    for name in ("presets", "arch", "space", "create", "run", "worker", "status", "enqueue", "export-best",
                 "evaluate", "predict", "report"):
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), name
    assert subprocess.run([sys.executable, "-m", "search", "--help"], capture_output=True).returncode == 0


def test_presets_table():
    out = run("presets", check=True).stdout
    for name, arch in PRESETS.items():
        line = next(l for l in out.splitlines() if l.startswith(name + " "))
        assert f"{count_params(arch):,}" in line
        assert line.rstrip().endswith("NO" if name == "resnet18-kuangliu" else "yes")


def test_presets_json_and_budget_flag():
    rows = json.loads(run("presets", "--json", "--budget", "4,800,000", check=True).stdout)["presets"]
    within = {r["name"]: r["within_budget"] for r in rows}
    assert within == {"resnet24-steroids": False, "resnet9-kuangliu": False, "se-resnet-rawat": True,
                      "resnet-nightshade": True, "resnet20-he": True, "resnet18-kuangliu": False}


def one_line_error(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_over_budget_arch_exits_1_with_count_and_budget():
    line = one_line_error(run("arch", "--preset", "resnet18-kuangliu"))
    assert "11,173,962" in line and "5,000,000" in line


def test_arch_file_round_trip_and_invalid_file(tmp_path):
    good = tmp_path / "a.json"
    good.write_text(json.dumps(PRESETS["resnet-nightshade"].to_dict()))
    assert json.loads(run("arch", "--file", str(good), check=True).stdout)["params"] == 4_709_914
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"stages": [{"blocks": 1, "channels": 16}], "pool_kernel": 5}))
    assert "pool_kernel" in one_line_error(run("arch", "--file", str(bad)))
    assert "cannot read" in one_line_error(run("arch", "--file", str(tmp_path / "none.json")))
    assert "unknown preset" in one_line_error(run("arch", "--preset", "vgg"))


@pytest.mark.parametrize("args", [["presets", "--budget", "lots"], ["nosuch"], []])
def test_usage_errors_exit_2(args):
    proc = run(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
