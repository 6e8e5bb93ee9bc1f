"""Run a prepared notebook in a throwaway copy of its folder, in a sandbox, under limits.

Each call of :func:`execute` makes a temporary folder, copies the submission's folder into it,
and starts :mod:`coursekit.course.worker` in a new session. On Linux with bubblewrap (``bwrap``)
the worker runs in a sandbox::

    bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp [--ro-bind PY PY] --bind WORK WORK
          --unshare-net --unshare-pid --unshare-ipc --new-session --die-with-parent

no network, a private ``/tmp`` and process namespace, and every file read-only except the copy
(``PY``: the folders of the Python environment and import path that lie under ``/tmp``, if any,
shown again read-only, so that a course cloned or a venv made under ``/tmp`` still runs).
Without bwrap (macOS, Windows, a Linux without it) the worker is a plain subprocess and the
report says so: the notebook can then read and write whatever the grading user can, and use the
network. Either way, afterwards the whole process group is killed (and, with bwrap, the process
namespace with it: a daemon the notebook started dies too) and the temporary folder is deleted.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Limits", "Execution", "execute", "bwrap_available", "TEMP_PREFIX"]

TEMP_PREFIX = "coursekit-grade-"
WORKER = Path(__file__).with_name("worker.py")


@dataclass
class Limits:
    """Limits on one submission. ``memory``: bytes of address space for the kernel (0: none)."""

    timeout: float = 600.0
    cell_timeout: float = 120.0
    memory: int = 4 << 30
    max_output: int = 20_000  # characters kept per cell
    max_verdict_output: int = 1_000_000
    max_file: int = 1 << 30  # bytes per file the notebook writes
    max_folder: int = 200 << 20  # bytes of the submission's folder copied
    max_restarts: int = 3


@dataclass
class Execution:
    records: dict[int, dict] = field(default_factory=dict)  # cell index -> the worker's record
    elapsed: float = 0.0
    sandboxed: bool = False
    killed: str = ""  # why the grader had to kill the worker, if it did
    worker_error: str = ""
    warnings: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=1)
def bwrap_available() -> str:
    """The path of a working ``bwrap`` ("" when it is missing or cannot make namespaces here)."""
    if not sys.platform.startswith("linux"):
        return ""
    path = shutil.which("bwrap")
    if not path:
        return ""
    try:
        probe = subprocess.run([path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net",
                                "--unshare-pid", "--die-with-parent", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return path if probe.returncode == 0 else ""


def _copy_folder(src: Path, dst: Path, exclude: set[Path], max_bytes: int) -> list[str]:
    warnings = []
    total = 0
    dst.mkdir(parents=True)
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__",)]
        for d in dirs:
            (dst / rel / d).mkdir(exist_ok=True)
        for name in files:
            path = Path(root) / name
            if path.resolve() in exclude or name.startswith(".") or path.is_symlink():
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if total + size > max_bytes:
                warnings.append(f"the submission's folder is larger than {max_bytes >> 20} MiB: "
                                f"{rel / name} and later files were not copied")
                return warnings
            total += size
            try:
                shutil.copy2(path, dst / rel / name)
            except OSError:
                pass
    return warnings


def _rmtree(path: Path) -> None:
    def onerror(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    for _ in range(3):
        shutil.rmtree(path, onerror=onerror)
        if not path.exists():
            return
        time.sleep(0.2)


def _env(work: Path, mode: str, token: str) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    home = work / "home"
    env.update({
        "HOME": str(home), "TMPDIR": str(work / "tmp"), "IPYTHONDIR": str(home / ".ipython"),
        "JUPYTER_CONFIG_DIR": str(home / ".jupyter"), "JUPYTER_DATA_DIR": str(home / ".jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "JUPYTER_PLATFORM_DIRS": "1",
        "MPLCONFIGDIR": str(home / ".matplotlib"), "MPLBACKEND": "agg", "XDG_CACHE_HOME": str(home / ".cache"),
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "COURSEKIT_MODE": mode, "COURSEKIT_QUIET": "1", "COURSEKIT_GRADE_TOKEN": token,
    })
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _kill_tagged(token: str) -> None:
    """Without a process namespace: kill every process that still carries this run's token."""
    if not os.path.isdir("/proc"):
        return
    needle = f"COURSEKIT_GRADE_TOKEN={token}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle in fh.read():
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def _python_paths_in_tmp() -> list[str]:
    """The folders under ``/tmp`` that this Python needs (its environment, its import path: a course
    cloned or a venv made under ``/tmp``), outermost only: the sandbox hides ``/tmp`` behind an empty
    one and shows these again, read-only."""
    tmp = Path("/tmp").resolve()
    candidates = {Path(sys.prefix), Path(os.path.realpath(sys.executable)).parent, Path(__file__).parents[2]}
    candidates |= {Path(p) for p in sys.path if p}
    inside = sorted({c.resolve() for c in candidates if c.exists() and c.resolve().is_relative_to(tmp)
                     and c.resolve() != tmp}, key=lambda c: len(c.parts))
    outer: list[Path] = []
    for c in inside:
        if not any(c.is_relative_to(o) for o in outer):
            outer.append(c)
    return [str(c) for c in outer]


def execute(cells: list[dict], folder: Path, limits: Limits, *, mode: str = "fast", exclude: set[Path] = frozenset(),
            sandbox: bool | None = None) -> Execution:
    """Execute ``cells`` (dicts with ``source`` and ``role``) with a copy of ``folder`` as working directory.

    ``sandbox``: True requires bwrap, False never uses it, None uses it when it works here.
    The first cell is given ``{WORK}`` / ``{START}`` substituted (the temporary and the copied folder).
    """
    bwrap = bwrap_available() if sandbox is not False else ""
    if sandbox and not bwrap:
        raise RuntimeError("the sandbox was required but bubblewrap (bwrap) is missing or does not work here "
                           "(Debian/Ubuntu: apt-get install bubblewrap)")
    result = Execution(sandboxed=bool(bwrap))
    if not bwrap:
        result.warnings.append("not sandboxed (bubblewrap is missing): the notebook ran with the grading user's "
                               "access to files and network")
    work = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX)).resolve()
    token = os.urandom(8).hex()
    proc = None
    try:
        start = work / "submission"
        result.warnings += _copy_folder(folder, start, {p.resolve() for p in exclude}, limits.max_folder)
        for d in ("home", "tmp", "runtime", "kernels/coursekit-grader"):
            (work / d).mkdir(parents=True, exist_ok=True)
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                         "--HistoryManager.enabled=False", "--IPKernelApp.capture_fd_output=False"],
                "display_name": "coursekit grader", "language": "python"}
        (work / "kernels/coursekit-grader/kernel.json").write_text(json.dumps(spec))
        job = {"work": str(work), "timeout": limits.timeout, "cell_timeout": limits.cell_timeout,
               "memory": limits.memory, "max_output": limits.max_output,
               "max_verdict_output": limits.max_verdict_output, "max_file": limits.max_file,
               "max_restarts": limits.max_restarts,
               "cells": [{"source": c["source"].replace("{WORK}", str(work)).replace("{START}", str(start)),
                          "role": c.get("role", "student"),
                          # the set-up cell imports torch: it gets time of its own, whatever the cell limit
                          "timeout": max(limits.cell_timeout, 120.0) if c.get("role") == "guard" else None}
                         for c in cells]}
        cmd = [sys.executable, "-I", str(WORKER)]
        if bwrap:
            keep = [a for p in _python_paths_in_tmp() for a in ("--ro-bind", p, p)]
            cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", *keep,
                   "--bind", str(work), str(work), "--unshare-net", "--unshare-pid", "--unshare-ipc",
                   "--new-session", "--die-with-parent", "--chdir", str(work), *cmd]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_env(work, mode, token), cwd=str(work), start_new_session=True)
        stderr_tail: list[bytes] = []

        def drain():
            for line in proc.stderr:
                stderr_tail.append(line[-500:])
                del stderr_tail[:-20]

        threading.Thread(target=drain, daemon=True).start()
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
        hard = limits.timeout + 60 + 10 * limits.max_restarts
        timer = threading.Timer(hard, lambda: _killpg(proc))
        timer.start()
        budget = 64 << 20  # bytes of records read at most
        try:
            for raw in proc.stdout:
                budget -= len(raw)
                if budget < 0:
                    result.killed = "the worker's output exceeded its limit"
                    _killpg(proc)
                    break
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(rec, dict):
                    continue
                if rec.get("done"):
                    if rec.get("status") != "ok":
                        result.worker_error = str(rec.get("status"))[:500]
                    break
                if isinstance(rec.get("i"), int) and 0 <= rec["i"] < len(cells):
                    result.records[rec["i"]] = rec
        finally:
            timer.cancel()
        if time.monotonic() - t0 >= hard - 1 and not result.killed:
            result.killed = f"the grader stopped it after {time.monotonic() - t0:.0f} s"
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        result.elapsed = time.monotonic() - t0
        if not result.records and not result.worker_error:
            tail = b"".join(stderr_tail).decode(errors="replace").strip().splitlines()[-3:]
            result.worker_error = "the worker stopped without a result" + (f": {' / '.join(tail)}" if tail else "")
    finally:
        if proc is not None:
            _killpg(proc)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdout, proc.stderr):
                try:
                    stream.close()
                except Exception:
                    pass
        if not bwrap:
            _kill_tagged(token)
        _rmtree(work)
    return result


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
