"""Run generated Python code against tests in a separate, limited process (never the trainer's).

The child runs ``python -I`` (isolated: no site-packages from the user dir, no PYTHON* env) in a
fresh temporary directory, with limits on CPU time and wall time (timeout), address space
(memory), file size and open files. The code's own stdout/stderr go to capped files, so a
program that prints forever cannot block or flood the parent; test results travel through a
separate results file.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HARNESS = r"""
import json, sys
code, tests, results_path = sys.argv[1], sys.argv[2], sys.argv[3]
src = open(code).read()
test_list = json.load(open(tests))
results = open(results_path, "w")
namespace = {"__name__": "__sandbox__"}
try:
    exec(compile(src, "solution.py", "exec"), namespace)
except BaseException as exc:
    results.write(json.dumps({"load_error": type(exc).__name__ + ": " + str(exc)[:200]}) + "\n"); results.flush()
    sys.exit(0)
for i, test in enumerate(test_list):
    try:
        exec(compile(test, f"test_{i}", "exec"), dict(namespace))
        outcome = {"test": i, "passed": True}
    except BaseException as exc:
        outcome = {"test": i, "passed": False, "error": type(exc).__name__ + ": " + str(exc)[:200]}
    results.write(json.dumps(outcome) + "\n"); results.flush()
"""


@dataclass
class SandboxResult:
    """``status``: ok, timeout, crashed (the process died: memory, signal, limit), or load_error."""

    passed: int
    total: int
    status: str
    detail: str = ""

    @property
    def fraction(self) -> float:
        """The fraction of tests passed (0 with none)."""
        return self.passed / self.total if self.total else 0.0


def _limits(memory_mb: int, cpu_seconds: float, output_bytes: int):
    def apply() -> None:
        os.setsid()
        memory = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        cpu = int(cpu_seconds) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes, output_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_tests(
    code: str, tests: list[str], timeout: float = 5.0, memory_mb: int = 512, output_bytes: int = 1 << 20
) -> SandboxResult:
    """Execute ``code`` then each test (Python statements, usually ``assert``s) in a limited child process."""
    if not tests:
        raise ValueError("run_tests needs at least one test")
    with tempfile.TemporaryDirectory(prefix="alignkit-sandbox-") as tmp:
        root = Path(tmp)
        (root / "solution.py").write_text(code, encoding="utf-8")
        (root / "tests.json").write_text(json.dumps(tests), encoding="utf-8")
        (root / "harness.py").write_text(HARNESS, encoding="utf-8")
        results_path = root / "results.jsonl"
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    str(root / "harness.py"),
                    str(root / "solution.py"),
                    str(root / "tests.json"),
                    str(results_path),
                ],
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
                preexec_fn=_limits(memory_mb, timeout, output_bytes),
            )
            try:
                returncode = process.wait(timeout=timeout)
                status = "ok" if returncode == 0 else "crashed"
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
                returncode, status = None, "timeout"
        outcomes = _read_results(results_path)
        if outcomes and "load_error" in outcomes[0]:
            return SandboxResult(0, len(tests), "load_error", outcomes[0]["load_error"])
        passed = sum(1 for o in outcomes if o.get("passed"))
        detail = (
            "" if status == "ok" else f"exit code {returncode}" if status == "crashed" else f"killed after {timeout}s"
        )
        if status == "crashed":
            tail = (root / "stderr").read_bytes()[-300:].decode("utf-8", "replace").strip()
            detail += f": {tail}" if tail else ""
        return SandboxResult(passed, len(tests), status, detail)


def _read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    outcomes = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            outcomes.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return outcomes


def extract_code(text: str) -> str:
    """The first fenced code block of a reply (```python ... ```), else the whole reply."""
    match = re.search(r"```(?:python|py)?\s*\n(.*?)```", text, re.DOTALL)
    return match.group(1) if match else text
