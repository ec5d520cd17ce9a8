"""Build benchmark: the sample app's generated pipeline on the local runner, with a real registry and feed.

Prints the run's wall time, each job's and step's duration, and how long the two publish jobs
overlapped. Run: ``.venv/bin/python bench/build.py``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _machine import print_machine

from blocks.git_host import LocalGitHost
from blocks.pipeline_runner import LocalPipelineRunner
from cli.local_registry import start_registry
from delivery.build_settings import BUILD_SETTINGS_FILE, parse_build_settings
from tasks.pipeline import render_pipeline

SAMPLE_APP = Path(__file__).resolve().parents[1] / "examples" / "sample-app"
SKIP = {"__pycache__", "deploy", "test-results", "build", "dist", ".pytest_cache"}


def main() -> None:
    print_machine()
    files = {p.relative_to(SAMPLE_APP).as_posix(): p.read_bytes() for p in sorted(SAMPLE_APP.rglob("*"))
             if p.is_file() and not SKIP & set(p.relative_to(SAMPLE_APP).parts) and ".egg-info" not in str(p)}
    files["azure-pipelines.yml"] = render_pipeline(parse_build_settings(files[BUILD_SETTINGS_FILE])).encode()
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        root = Path(tmp)
        host = LocalGitHost(root=str(root / "repos"))
        host.ensure_repository("sample-app", initial_files=files)
        began = time.monotonic()
        with start_registry(root / "registry") as registry:
            registry_seconds = time.monotonic() - began
            began = time.monotonic()
            result = LocalPipelineRunner(work_dir=str(root / "runs")).run(
                repository="sample-app", clone_url=host.clone_url("sample-app"),
                commit=host.resolve("sample-app", "main"), pipeline_path="azure-pipelines.yml",
                variables={"PACKAGE_FEED": str(root / "feed"), "IMAGE_REGISTRY": registry.url}, run_name="bench")
            wall = time.monotonic() - began
    print(f"registry start: {registry_seconds:.2f}s")
    print(f"pipeline run:   {wall:.2f}s  succeeded={result.succeeded}  tests={result.tests.total}")
    for job in result.jobs:
        print(f"  job {job.name:<16} {(job.finished_at - job.started_at).total_seconds():6.2f}s")
        for step in job.steps:
            if step.started_at:
                print(f"    {step.name:<30} {(step.finished_at - step.started_at).total_seconds():6.2f}s")
    package, image = result.job("publish_package"), result.job("publish_image")
    overlap = min(package.finished_at, image.finished_at) - max(package.started_at, image.started_at)
    print(f"publish jobs overlapped for {overlap.total_seconds():.2f}s")


if __name__ == "__main__":
    main()
