"""A fake Azure Repos for tests: the REST 7.1 shapes of /work/shared/reference/provider-apis.md over real
bare repositories.

Repositories are ``<root>/<name>.git``, served by ``git http-backend`` under
``/<org>/<project>/_git/<name>``; the API lives under ``/<org>/<project>/_apis`` (both Basic with an
empty user and the PAT, ``api-version`` required). Pull requests, statuses and threads are kept in
memory; completion is a real merge on the bare repository. Policies: one blocking ``Build`` policy,
rejected when the head's tree holds a file ``FAIL``, and one optional ``Comment requirements``; one
pull request status ``ci/build`` posted twice (pending, then succeeded: the later one counts).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from support.git_http_server import Answer, FakeServer, Request, branch_head, git, init_bare, merge, merge_tree

PROJECT_ID = "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c"


class FakeAzureRepos:
    def __init__(self, root: Path, token: str, organization: str = "contoso", project: str = "web") -> None:
        self.root, self.organization, self.project = root, organization, project
        self.pulls: dict[str, list[dict[str, Any]]] = {}
        self.threads: dict[tuple[str, int], list[dict[str, Any]]] = {}
        basic = f"Basic {base64.b64encode(f':{token}'.encode()).decode()}"
        self.server = FakeServer(git_route=self._git_route, api=self._api, git_auth=basic, api_auth=basic)

    def create_repository(self, name: str) -> Path:
        return init_bare(self.root / f"{name}.git")

    def _git_route(self, path: str) -> tuple[Path, str] | None:
        match = re.fullmatch(rf"/{self.organization}/{self.project}/_git/([^/]+)(/.*)", path)
        return (self.root, f"/{match.group(1)}.git{match.group(2)}") if match else None

    # ------------------------------------------------------------------ REST

    def _api(self, request: Request) -> Answer | None:
        if not request.query.get("api-version", "").startswith("7.1"):
            return Answer(400, {"message": "api-version is required"})
        if request.path == f"/{self.organization}/_apis/projects/{self.project}":
            return Answer(200, {"id": PROJECT_ID, "name": self.project})
        prefix = f"/{self.organization}/{self.project}/_apis/"
        if not request.path.startswith(prefix):
            return None
        rest, method = request.path[len(prefix):], request.method
        if rest == "policy/evaluations" and method == "GET":
            return self._evaluations(request.query.get("artifactId", ""))
        match = re.fullmatch(r"git/repositories/([^/]+)/pull[rR]equests(?:/(\d+)(?:/(statuses|threads))?)?", rest)
        if not match:
            return None
        name = match.group(1)
        repo = self.root / f"{name}.git"
        if not (repo / "HEAD").exists():
            return Answer(404, {"message": f"TF401019: The Git repository with name or identifier {name} does not "
                                          "exist or you do not have permissions"})
        if match.group(2) is None:
            if method == "POST":
                return self._create(repo, name, request.json())
            wanted = {k.removeprefix("searchCriteria."): v for k, v in request.query.items()
                      if k.startswith("searchCriteria.")}
            found = [self._view(repo, pr) for pr in self.pulls.get(name, [])
                     if pr["sourceRefName"] == wanted.get("sourceRefName", pr["sourceRefName"])
                     and pr["targetRefName"] == wanted.get("targetRefName", pr["targetRefName"])]
            return Answer(200, {"value": found, "count": len(found)})
        number = int(match.group(2))
        pr = next((p for p in self.pulls.get(name, []) if p["pullRequestId"] == number), None)
        if pr is None:
            return Answer(404, {"message": f"TF401180: The requested pull request was not found. {number}"})
        if match.group(3) == "statuses":
            statuses = [{"id": 1, "state": "pending", "description": "queued", "context": {"name": "build",
                                                                                         "genre": "ci"}},
                        {"id": 2, "state": "succeeded", "description": "build passed",
                         "context": {"name": "build", "genre": "ci"}}]
            return Answer(200, {"value": statuses, "count": 2})
        if match.group(3) == "threads":
            key = (name, number)
            if method == "POST":
                thread = {"id": len(self.threads.get(key, [])) + 1, **request.json()}
                self.threads.setdefault(key, []).append(thread)
                return Answer(200, thread)
            return Answer(200, {"value": self.threads.get(key, []), "count": len(self.threads.get(key, []))})
        if method == "PATCH":
            return self._complete(repo, pr, request.json())
        return Answer(200, self._view(repo, pr))

    def _create(self, repo: Path, name: str, body: dict[str, Any]) -> Answer:
        source, target = body.get("sourceRefName", ""), body.get("targetRefName", "")
        head = branch_head(repo, source.removeprefix("refs/heads/"))
        if head is None or branch_head(repo, target.removeprefix("refs/heads/")) is None:
            return Answer(400, {"message": "TF401398: The pull request cannot be activated because the source "
                                           "and/or the target branch no longer exists"})
        if any(p["status"] == "active" and p["sourceRefName"] == source and p["targetRefName"] == target
               for p in self.pulls.get(name, [])):
            return Answer(409, {"message": "TF401179: An active pull request for the source and target branch "
                                           "already exists."})
        number = 1 + sum(len(p) for p in self.pulls.values())
        pr = {"pullRequestId": number, "status": "active", "sourceRefName": source, "targetRefName": target,
              "title": body.get("title"), "description": body.get("description"), "isDraft": False,
              "lastMergeSourceCommit": {"commitId": head}, "creationDate": "2026-01-01T00:00:00Z",
              "repository": {"name": name}, "url": f"{self.server.url}/_apis/git/pullRequests/{number}"}
        self.pulls.setdefault(name, []).append(pr)
        return Answer(201, self._view(repo, pr))

    def _view(self, repo: Path, pr: dict[str, Any]) -> dict[str, Any]:
        view = dict(pr)
        if pr["status"] == "active":  # the source follows the branch; the merge status is computed
            head = branch_head(repo, pr["sourceRefName"].removeprefix("refs/heads/")) or ""
            base = branch_head(repo, pr["targetRefName"].removeprefix("refs/heads/"))
            view["lastMergeSourceCommit"] = {"commitId": head}
            view["mergeStatus"] = "succeeded" if base and merge_tree(repo, base, head) else "conflicts"
        return view

    def _evaluations(self, artifact: str) -> Answer:
        match = re.fullmatch(rf"vstfs:///CodeReview/CodeReviewId/{PROJECT_ID}/(\d+)", artifact)
        if not match:
            return Answer(400, {"message": f"artifactId {artifact!r} is not a code review of project {PROJECT_ID}"})
        number = int(match.group(1))
        pr = next((p for name, pulls in self.pulls.items() for p in pulls if p["pullRequestId"] == number), None)
        if pr is None:
            return Answer(200, {"value": [], "count": 0})
        repo = self.root / f"{pr['repository']['name']}.git"
        head = self._view(repo, pr)["lastMergeSourceCommit"]["commitId"]
        failing = bool(git(repo, "ls-tree", "--name-only", head, "FAIL", check=False))
        records = [
            {"evaluationId": "e-1", "status": "rejected" if failing else "approved",
             "configuration": {"isBlocking": True, "isEnabled": True, "type": {"displayName": "Build"},
                               "settings": {"buildDefinitionId": 7}}},
            {"evaluationId": "e-2", "status": "queued",
             "configuration": {"isBlocking": False, "isEnabled": True,
                               "type": {"displayName": "Comment requirements"}, "settings": {}}},
        ]
        return Answer(200, {"value": records, "count": len(records)})

    def _complete(self, repo: Path, pr: dict[str, Any], body: dict[str, Any]) -> Answer:
        view = self._view(repo, pr)
        if pr["status"] != "active" or body.get("status") != "completed":
            return Answer(400, {"message": "only the completion of an active pull request is supported"})
        if (body.get("lastMergeSourceCommit") or {}).get("commitId") != view["lastMergeSourceCommit"]["commitId"]:
            return Answer(409, {"message": "TF401192: the source branch was updated; the pull request was not "
                                           "completed"})
        if view["mergeStatus"] != "succeeded":
            return Answer(200, {**view, "status": "active"})
        options = body.get("completionOptions") or {}
        strategy = options.get("mergeStrategy", "noFastForward")
        if strategy not in ("noFastForward", "squash"):
            return Answer(400, {"message": f"mergeStrategy {strategy} is not supported by the fake"})
        sha = merge(repo, target=pr["targetRefName"].removeprefix("refs/heads/"),
                    head=view["lastMergeSourceCommit"]["commitId"], message=options.get("mergeCommitMessage", "Merged"),
                    squash=strategy == "squash")
        pr.update({"status": "completed", "lastMergeSourceCommit": view["lastMergeSourceCommit"],
                   "lastMergeCommit": {"commitId": sha}, "mergeStatus": "succeeded"})
        return Answer(200, dict(pr))
