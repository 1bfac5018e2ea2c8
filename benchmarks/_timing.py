"""Shared benchmark helpers: timed repeats with warm-up and CUDA sync, per-process peak memory, and result rows.

Peak memory is read from the kernel (`VmHWM`, `ru_maxrss`), not `tracemalloc`, which does not see torch's
allocations. Each case runs in a fresh child process (`run_isolated`), so a peak belongs to that case alone, and the
child can reset its high-water mark after warm-up (`reset_peak_rss`) to measure the timed runs only.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "Timing",
    "append_jsonl",
    "device_name",
    "environment",
    "markdown_table",
    "measure",
    "peak_rss_bytes",
    "reset_peak_rss",
    "rss_bytes",
    "run_isolated",
    "synchronize",
]

MB = 1024 * 1024


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of each timed repeat (warm-up runs excluded)."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """max - min: how far apart the repeats were."""
        return max(self.times) - min(self.times)

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "spread_s": self.spread, "times_s": list(self.times)}

    def __str__(self) -> str:
        return f"{self.median:.3f} ± {self.spread / 2:.3f}"


def synchronize(device: str) -> None:
    """Wait for queued CUDA work, so a timer measures the work and not its launch."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], *, repeats: int, warmup: int = 1, device: str = "cpu") -> Timing:
    """Call `fn` `warmup` times untimed, then `repeats` times timed, synchronizing `device` around each call."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats!r}.")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Timing(tuple(times))


def rss_bytes() -> int:
    """Resident memory of this process now (Linux `/proc/self/statm`; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Highest resident memory of this process since it started, or since `reset_peak_rss()` where that works."""
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return _maxrss_to_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def reset_peak_rss() -> bool:
    """Start `peak_rss_bytes()` afresh from the current resident size (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        return False
    return True


def _maxrss_to_bytes(value: int) -> int:
    return value if sys.platform == "darwin" else value * 1024  # kilobytes on Linux, bytes on macOS


def run_isolated(argv: Sequence[str], *, timeout: float | None = None) -> tuple[dict[str, Any], int]:
    """Run `argv` (a worker that prints one JSON object as its last stdout line) in a fresh process.

    Returns:
        The worker's JSON object and the child's own peak resident memory in bytes (from `os.wait4`, so other
        children and this process do not count).

    Raises:
        RuntimeError: the worker failed; its stderr is in the message.
    """
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            stdout = _read_all(proc, timeout)
        finally:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"Worker {' '.join(argv)!r} exited with {proc.returncode}:\n{stderr.read()[-4000:]}")
    lines = [line for line in stdout.splitlines() if line.strip()]
    return json.loads(lines[-1]), _maxrss_to_bytes(usage.ru_maxrss)


def _read_all(proc: subprocess.Popen, timeout: float | None) -> str:
    """All of the child's stdout, without reaping it (`communicate()` would, leaving `wait4` nothing to read)."""
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        proc.kill()
        reader.join()
        raise RuntimeError(f"Worker {proc.args!r} ran past {timeout} s.")
    return "".join(chunks)


def device_name(device: str) -> str:
    """The accelerator's or CPU's model name."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def environment(device: str) -> dict[str, Any]:
    """What a result row records about where it was measured."""
    import torch

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        sha = "unknown"
    return {
        "git_sha": sha,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "device_name": device_name(device),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def append_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        for row in rows:
            file.write(json.dumps(row, sort_keys=True) + "\n")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    numeric = [all(_is_number(row[i]) for row in cells) and bool(cells) for i in range(len(headers))]
    rule = ["---:" if n else "---" for n in numeric]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").replace("×", "").split(" ")[0])
    except ValueError:
        return False
    return True
