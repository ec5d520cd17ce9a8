"""What a pipeline run reads: the pipeline YAML, the JUnit reports its steps wrote, and their logs.

The YAML is the subset of Azure Pipelines the generated pipelines use: stages, jobs, ``dependsOn``,
``timeoutInMinutes``, ``script`` steps, the ``PublishTestResults@2`` task and variables. Lines
starting with ``##delivery[published]`` in a step's log report the packages and images it published.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml

from blocks.publishing import PUBLISHED_MARKER
from delivery.errors import InvalidInput, PermanentError
from delivery.models import Model, PublishedImage, PublishedPackage, TestCounts

TEST_RESULTS_TASK = "PublishTestResults@2"
_JOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


class PipelineJob(Model):
    """A job as the runner schedules it."""

    name: str
    stage: str
    depends_on: list[str]
    steps: list[dict[str, Any]]
    timeout_minutes: float = 60


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _variables(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    found = {}
    for entry in value:  # the list form: [{name, value}] (groups and templates are not supported)
        if isinstance(entry, dict) and "name" in entry:
            found[str(entry["name"])] = str(entry.get("value", ""))
    return found


def parse_pipeline(text: str | bytes) -> tuple[list[PipelineJob], dict[str, str]]:
    """Read the jobs (with their dependencies resolved to job names) and variables of a pipeline.

    Stages run one after the other unless ``dependsOn`` says otherwise; jobs of a stage run in
    parallel unless their own ``dependsOn`` orders them.

    Raises:
        InvalidInput: the YAML is not a pipeline this runner understands.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"pipeline: not valid YAML ({exc})") from exc
    if not isinstance(document, dict):
        raise InvalidInput("pipeline: expected a mapping")
    if "stages" in document:
        stages = document["stages"]
    elif "jobs" in document:
        stages = [{"stage": "__default", "jobs": document["jobs"]}]
    elif "steps" in document:
        stages = [{"stage": "__default", "jobs": [{"job": "job", "steps": document["steps"]}]}]
    else:
        raise InvalidInput("pipeline: needs stages, jobs or steps")
    jobs: list[PipelineJob] = []
    stage_jobs: dict[str, list[str]] = {}
    previous: str | None = None
    for index, stage in enumerate(stages or []):
        stage_name = str(stage.get("stage") or f"stage{index}")
        stage_deps = _names(stage["dependsOn"]) if "dependsOn" in stage else _names(previous)
        for dep in stage_deps:
            if dep not in stage_jobs:
                raise InvalidInput(f"pipeline: stage {stage_name} dependsOn unknown stage {dep!r}")
        inherited = [job for dep in stage_deps for job in stage_jobs[dep]]
        names: list[str] = []
        for job in stage.get("jobs") or []:
            name = str(job.get("job") or job.get("deployment") or "")
            if not _JOB_NAME.match(name):  # Azure's rule; it also keeps job folders inside the run
                raise InvalidInput(f"pipeline: job name {name!r} in stage {stage_name} is invalid "
                                   "(letters, digits and '_', not starting with a digit)")
            own = _names(job.get("dependsOn"))
            for dep in own:
                if dep not in names and dep not in [s.get("job") for s in stage.get("jobs")]:
                    raise InvalidInput(f"pipeline: job {name} dependsOn unknown job {dep!r}")
            jobs.append(PipelineJob(name=name, stage=stage_name, depends_on=inherited + own,
                                    steps=list(job.get("steps") or []),
                                    timeout_minutes=float(job.get("timeoutInMinutes") or 60)))
            names.append(name)
        stage_jobs[stage_name] = names
        previous = stage_name
    if len({job.name for job in jobs}) != len(jobs):
        raise InvalidInput("pipeline: job names must be unique")
    return jobs, _variables(document.get("variables"))


def read_junit(paths: list[Path]) -> TestCounts:
    """Add up JUnit XML reports (``testsuites`` or ``testsuite`` roots)."""
    total = failed = skipped = 0
    for path in paths:
        try:
            root = ElementTree.parse(path).getroot()
        except ElementTree.ParseError as exc:
            raise PermanentError(f"test results {path.name}: not JUnit XML ({exc})") from exc
        suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
        for suite in suites:
            total += int(suite.get("tests", 0))
            failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skipped += int(suite.get("skipped", 0))
    return TestCounts(total=total, passed=max(total - failed - skipped, 0), failed=failed, skipped=skipped)


def read_published(log_text: str) -> tuple[list[PublishedPackage], list[PublishedImage]]:
    """Find the ``##delivery[published]`` lines a publish step printed."""
    packages, images = [], []
    for line in log_text.splitlines():
        marker = line.find(PUBLISHED_MARKER)
        if marker < 0:
            continue
        record = json.loads(line[marker + len(PUBLISHED_MARKER):])
        kind = record.pop("kind", None)
        if kind == "package":
            packages.append(PublishedPackage.model_validate(record))
        elif kind == "image":
            images.append(PublishedImage.model_validate(record))
    return packages, images
