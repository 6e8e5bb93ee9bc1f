"""Execute one prepared notebook in a fresh kernel, cell by cell, under time and output limits.

Run as a script (``python -I worker.py``), inside the sandbox, by :mod:`coursekit.course.sandbox`;
it imports nothing from coursekit, so a submission that patches or shadows coursekit cannot reach
it. It reads a JSON job on stdin and writes one JSON line per cell on stdout (the kernel's own
stdout and stderr go to /dev/null, so the notebook cannot write into this channel by printing):

    {"i": 3, "status": "ok" | "error" | "timeout" | "died" | "skipped", "elapsed": 0.12,
     "text": "what the cell printed (capped)", "error": "ValueError: ...", "note": "..."}

and a last line ``{"done": true, ...}``. Limits:

* per cell (``cell_timeout``): the kernel is interrupted and grading goes on with the next cell;
  a kernel that ignores the interrupt, or dies, is restarted and the earlier cells that ran
  without error are replayed (outputs discarded), at most ``max_restarts`` times;
* total (``timeout``): the cells not reached are ``skipped``;
* memory: ``RLIMIT_AS`` (``memory`` bytes) for the kernel, files up to ``max_file`` bytes;
* output: ``max_output`` characters kept per cell (``max_verdict_output`` for the grader's cells,
  whose verdict line must survive a flood of output from a background thread).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import time

__all__ = ["main"]


def _emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _set_limits(job: dict) -> None:
    import resource

    if job.get("memory"):
        resource.setrlimit(resource.RLIMIT_AS, (int(job["memory"]), int(job["memory"])))
    if job.get("max_file"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(job["max_file"]), int(job["max_file"])))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _become_subreaper() -> None:
    """Orphaned descendants (a daemon the notebook starts) are re-parented to us, so we can kill them."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_descendants() -> None:
    for _ in range(5):
        pids = _descendants(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            try:
                if os.waitpid(-1, os.WNOHANG) == (0, 0):
                    time.sleep(0.02)
            except ChildProcessError:
                break


class Runner:
    def __init__(self, job: dict):
        self.job = job
        self.cells: list[dict] = job["cells"]
        self.start = time.monotonic()
        self.timeout = float(job["timeout"])
        self.cell_timeout = float(job["cell_timeout"])
        self.grace = float(job.get("interrupt_grace", 5))
        self.km = None
        self.kc = None

    # ---------------------------------------------------------------- kernel
    def start_kernel(self) -> None:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        spec_dir = os.path.join(self.job["work"], "kernels")
        ksm = KernelSpecManager(kernel_dirs=[spec_dir], ensure_native_kernel=False)
        self.km = KernelManager(kernel_name="coursekit-grader", kernel_spec_manager=ksm)
        self.km.start_kernel(cwd=self.job["work"], stdin=open(os.devnull), stdout=open(os.devnull, "w"),
                             stderr=open(os.devnull, "w"), env=dict(os.environ))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=max(30.0, min(120.0, self.remaining())))

    def stop_kernel(self) -> None:
        try:
            if self.kc is not None:
                self.kc.stop_channels()
        except Exception:
            pass
        try:
            if self.km is not None:
                self.km.shutdown_kernel(now=True)
        except Exception:
            pass
        self.km = self.kc = None

    def restart(self) -> None:
        self.stop_kernel()
        kill_descendants()
        self.start_kernel()

    def remaining(self) -> float:
        return self.timeout - (time.monotonic() - self.start)

    # ---------------------------------------------------------------- one cell
    def execute(self, source: str, limit: float, cap: int) -> dict:
        """Run one cell; returns status, elapsed, text, error."""
        kc, km = self.kc, self.km
        t0 = time.monotonic()
        msg_id = kc.execute(source, store_history=True, allow_stdin=False, stop_on_error=False)
        text: list[str] = []
        size = 0
        truncated = False
        error = None
        deadline = t0 + limit
        interrupted_at = None
        while True:
            now = time.monotonic()
            if interrupted_at is None and now >= deadline:
                try:
                    km.interrupt_kernel()
                except Exception:
                    pass
                interrupted_at = now
            if interrupted_at is not None and now >= interrupted_at + self.grace:
                return {"status": "timeout", "elapsed": now - t0, "text": "".join(text), "error": error,
                        "note": "the kernel ignored the interrupt", "stuck": True}
            try:
                msg = kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if not km.is_alive():
                    return {"status": "died", "elapsed": time.monotonic() - t0, "text": "".join(text), "error": error}
                continue
            except Exception:  # a malformed message: drop it
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg.get("msg_type"), msg.get("content", {})
            if kind == "status" and content.get("execution_state") == "idle":
                break
            piece = None
            if kind == "stream" and content.get("name") == "stdout":
                piece = str(content.get("text", ""))
            elif kind == "stream":
                piece = ""  # stderr: not kept (warnings); errors come as "error" messages
            elif kind in ("execute_result", "display_data"):
                piece = str(content.get("data", {}).get("text/plain", "")) + "\n"
            elif kind == "error":
                error = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"[:2000]
            if piece:
                if size + len(piece) > cap:
                    piece = piece[: max(0, cap - size)]
                    truncated = True
                size += len(piece)
                text.append(piece)
        elapsed = time.monotonic() - t0
        out = {"status": "ok", "elapsed": elapsed, "text": "".join(text), "error": error}
        if truncated:
            out["note"] = f"output truncated to {cap} characters"
        if interrupted_at is not None:
            out["status"] = "timeout"
        elif error is not None:
            out["status"] = "error"
        return out

    # ---------------------------------------------------------------- the notebook
    def run(self) -> None:
        self.start_kernel()
        done_ok: list[int] = []  # cells to replay after a restart
        restarts = 0
        i = 0
        n = len(self.cells)
        while i < n:
            cell = self.cells[i]
            left = self.remaining()
            if left <= 0:
                for j in range(i, n):
                    _emit({"i": j, "status": "skipped", "elapsed": 0.0, "text": "", "error": None,
                           "note": f"the notebook used up its total time limit of {self.timeout:g} s "
                                   f"({time.monotonic() - self.start:.1f} s elapsed)"})
                break
            verdict = cell.get("role") == "verdict"
            cap = int(self.job["max_verdict_output"] if verdict else self.job["max_output"])
            own = float(cell.get("timeout") or self.cell_timeout)
            limit = min(own, left)
            res = self.execute(cell["source"], limit, cap)
            if res["status"] == "timeout" and limit < own:
                res["note"] = (res.get("note", "") + "; " if res.get("note") else "") + \
                    f"the notebook used up its total time limit of {self.timeout:g} s"
            stuck = res.pop("stuck", False)
            _emit({"i": i, **res})
            if cell.get("role") == "guard" and res["status"] != "ok":
                why = res.get("error") or res.get("note") or res["status"]
                for j in range(i + 1, n):
                    _emit({"i": j, "status": "skipped", "elapsed": 0.0, "text": "", "error": None,
                           "note": f"the grader's set-up cell failed ({why})"})
                break
            if res["status"] == "ok" and cell.get("role") != "verdict":
                done_ok.append(i)
            if res["status"] == "died" or stuck:
                if restarts >= int(self.job.get("max_restarts", 3)) or self.remaining() <= 0:
                    for j in range(i + 1, n):
                        _emit({"i": j, "status": "skipped", "elapsed": 0.0, "text": "", "error": None,
                               "note": "not reached: the kernel died or hung too often"})
                    break
                restarts += 1
                try:
                    self.restart()
                    for j in done_ok:
                        left = self.remaining()
                        if left <= 0:
                            break
                        own = float(self.cells[j].get("timeout") or self.cell_timeout)
                        replay = self.execute(self.cells[j]["source"], min(own, left), 1000)
                        if replay["status"] in ("died", "timeout"):
                            raise RuntimeError(f"cell {j} {replay['status']} again while replaying")
                except Exception as err:
                    for j in range(i + 1, n):
                        _emit({"i": j, "status": "skipped", "elapsed": 0.0, "text": "", "error": None,
                               "note": f"not reached: the kernel could not be restarted ({err})"})
                    break
            i += 1
        self.stop_kernel()


def main() -> None:
    for name in ("traitlets", "jupyter_client", "asyncio", "tornado", "zmq"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    logging.getLogger().setLevel(logging.CRITICAL + 1)
    import warnings

    warnings.simplefilter("ignore")
    job = json.loads(sys.stdin.read())
    os.chdir(job["work"])
    _become_subreaper()
    _set_limits(job)
    status = "ok"
    try:
        Runner(job).run()
    except Exception as err:  # the kernel could not start, ...
        status = f"{type(err).__name__}: {err}"
    finally:
        kill_descendants()
    _emit({"done": True, "status": status})
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
