"""`delivery down` stops exactly what `delivery up` recorded, and nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

from delivery.cli.stack import StackInfo, StackProcess, _alive, _spawn, down, read_stack, stack_file


def _info(home: Path, processes: list[StackProcess]) -> StackInfo:
    return StackInfo(
        home=str(home), api_url="http://127.0.0.1:1/api", ui_url="http://127.0.0.1:1", simulator_url="",
        kubeconfig="", registry_url="", git_root="", gitops_repo="", ledger_url="sqlite://", processes=processes,
    )


def test_down_stops_the_recorded_processes_only(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    recorded = [_spawn(name, ["sleep", "600"], env=env, logs=tmp_path / "logs", marker="sleep")
                for name in ("one", "two")]
    bystander = subprocess.Popen(["sleep", "601"], start_new_session=True)
    # a recorded pid whose command line is no longer ours (pid reuse) is left alone
    reused = StackProcess(name="reused", pid=bystander.pid, marker="prefect", log=str(tmp_path / "x.log"))
    stack_file(tmp_path).write_text(_info(tmp_path, [*recorded, reused]).model_dump_json())
    try:
        assert all(_alive(p) for p in recorded)
        lines: list[str] = []
        stopped = down(home=tmp_path, say=lines.append)
        assert stopped == ["two", "one"]
        assert not any(_alive(p) for p in recorded)
        assert bystander.poll() is None, "a process down did not start was stopped"
        assert read_stack(tmp_path) is None
        assert down(home=tmp_path, say=lines.append) == [] and lines[-1].startswith("nothing to stop")
    finally:
        bystander.kill()
        bystander.wait()
