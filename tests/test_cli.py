"""The `ghn` command line: subcommand table, `ghn graph`, exit codes and error output."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ghn import __version__
from ghn.cli import COMMANDS, format_table, main


def test_every_command_has_help_and_a_runner():
    assert "graph" in COMMANDS
    for name in COMMANDS:
        spec = COMMANDS.get(name)
        assert spec.name == name and spec.help and callable(spec.run) and callable(spec.add_arguments)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ghn {__version__}"


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_graph_prints_stats_by_default(capsys):
    assert main(["graph", "zoo:resnet18"]) == 0
    out = capsys.readouterr().out
    assert "nodes       53" in out and "edges       60" in out
    assert "11,689,512/11,689,512 parameters (100.00%)" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line and line.split()[0] in ("conv", "relu")}
    assert rows["conv"] == ["conv", "layer", "3", "20"]
    assert rows["relu"] == ["relu", "activation", "300", "17"]


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_graph_draws_to_out(tmp_path, capsys, suffix):
    path = tmp_path / f"graph.{suffix}"
    assert main(["graph", "zoo:resnet18", "--out", str(path)]) == 0
    assert path.stat().st_size > 1000
    out = capsys.readouterr().out
    assert f"to {path}" in out and "coverage" not in out


def test_graph_draws_and_prints_stats(tmp_path, capsys):
    path = tmp_path / "graph.svg"
    assert main(["graph", "zoo:resnet18", "--out", str(path), "--stats"]) == 0
    assert path.exists() and "coverage" in capsys.readouterr().out


def test_an_unknown_spec_exits_2_with_the_message_and_no_traceback(capsys):
    assert main(["graph", "zoo:resnt18"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("ghn graph: error: Unknown zoo preset or family 'resnt18'. Did you mean 'resnet18'")
    assert "Traceback" not in captured.err


def test_debug_shows_the_traceback(capsys):
    assert main(["graph", "zoo:resnt18", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "UnknownNameError" in err


def test_a_bad_out_suffix_exits_2(tmp_path, capsys):
    assert main(["graph", "zoo:resnet18", "--out", str(tmp_path / "graph.jpg")]) == 2
    assert "use a '.png' or '.svg' file name" in capsys.readouterr().err


def test_a_bad_device_exits_2(capsys):
    assert main(["graph", "zoo:resnet18", "--device", "gpu0"]) == 2
    assert "Unknown device 'gpu0'" in capsys.readouterr().err


def test_flags_are_not_abbreviated(capsys):
    with pytest.raises(SystemExit) as info:
        main(["graph", "zoo:resnet18", "--stat"])
    assert info.value.code == 2


def test_format_table_aligns_columns():
    table = format_table(("op", "count"), [("conv", "20"), ("linear", "1")], right=(1,))
    assert table.splitlines() == ["op      count", "------  -----", "conv       20", "linear      1"]


def test_python_dash_m_ghn_runs_the_command_line_and_exits_with_its_code():
    """One real process (importing torch takes seconds): `python -m ghn` reaches `main` and `sys.exit`s its code."""
    command = [sys.executable, "-m", "ghn", "graph", "zoo:nope"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("ghn graph: error: Unknown zoo preset or family 'nope'")
    assert result.stdout == ""
