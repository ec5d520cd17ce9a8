"""A fake GitHub for tests: the REST shapes of /work/shared/reference/provider-apis.md over real bare repositories.

Repositories are ``<root>/<owner>/<name>.git``, served by ``git http-backend`` under ``/git/<owner>/<name>.git``
(git authenticates as ``x-access-token`` with the token as password); the API lives under ``/api``
(Bearer token). Pull requests and comments are kept in memory; merges are real (``git merge-tree`` +
``commit-tree`` + ``update-ref`` on the bare repository). The CI: one check run ``build`` on every
commit, failing when the commit's tree holds a file ``FAIL`` (in progress for the first
``pending_reads`` reads), and one commit status ``lint`` (success).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from support.git_http_server import Answer, FakeServer, Request, branch_head, git, init_bare, merge, merge_tree


class FakeGitHub:
    def __init__(self, root: Path, token: str, owner: str = "acme") -> None:
        self.root, self.owner = root, owner
        self.pulls: dict[str, list[dict[str, Any]]] = {}
        self.comments: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.pending_reads = 0  # this many reads of check runs still find the build in progress
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        self.server = FakeServer(git_route=self._git_route, api=self._api, git_auth=f"Basic {basic}",
                                 api_auth=f"Bearer {token}")

    def create_repository(self, name: str) -> Path:
        return init_bare(self.root / self.owner / f"{name}.git")

    def _git_route(self, path: str) -> tuple[Path, str] | None:
        if path.startswith("/git/"):
            return self.root, path[len("/git"):]
        return None

    def _repo(self, owner: str, name: str) -> Path | None:
        path = self.root / owner / f"{name}.git"
        return path if owner == self.owner and (path / "HEAD").exists() else None

    # ------------------------------------------------------------------ REST

    def _api(self, request: Request) -> Answer | None:
        if request.headers.get("x-github-api-version") != "2022-11-28":
            return Answer(400, {"message": "X-GitHub-Api-Version missing"})
        match = re.fullmatch(r"/api/repos/([^/]+)/([^/]+)/(.+)", request.path)
        if not match:
            return None
        repo = self._repo(match.group(1), match.group(2))
        if repo is None:
            return Answer(404, {"message": "Not Found"})
        name, rest, method = match.group(2), match.group(3), request.method
        if rest == "pulls" and method == "GET":
            return Answer(200, [self._view(repo, pr) for pr in self.pulls.get(name, [])
                                if f"{self.owner}:{pr['head']['ref']}" == request.query.get("head", f"{self.owner}:"
                                                                                           f"{pr['head']['ref']}")
                                and pr["base"]["ref"] == request.query.get("base", pr["base"]["ref"])])
        if rest == "pulls" and method == "POST":
            return self._create(repo, name, request.json())
        number = re.fullmatch(r"pulls/(\d+)(/merge)?", rest)
        if number:
            pr = next((p for p in self.pulls.get(name, []) if p["number"] == int(number.group(1))), None)
            if pr is None:
                return Answer(404, {"message": "Not Found"})
            if number.group(2) and method == "PUT":
                return self._merge(repo, pr, request.json())
            return Answer(200, self._view(repo, pr)) if method == "GET" else None
        checks = re.fullmatch(r"commits/([0-9a-f]{40})/(check-runs|status)", rest)
        if checks and method == "GET":
            sha = checks.group(1)
            if checks.group(2) == "check-runs":
                failing = bool(git(repo, "ls-tree", "--name-only", sha, "FAIL", check=False))
                if self.pending_reads > 0:
                    self.pending_reads -= 1
                    return Answer(200, {"total_count": 1, "check_runs": [
                        {"name": "build", "status": "in_progress", "conclusion": None}]})
                return Answer(200, {"total_count": 1, "check_runs": [
                    {"name": "build", "status": "completed", "conclusion": "failure" if failing else "success"}]})
            return Answer(200, {"state": "success", "sha": sha, "statuses": [
                {"context": "lint", "state": "success", "description": "lint passed"}]})
        comments = re.fullmatch(r"issues/(\d+)/comments", rest)
        if comments:
            key = (name, int(comments.group(1)))
            if not any(p["number"] == key[1] for p in self.pulls.get(name, [])):
                return Answer(404, {"message": "Not Found"})
            if method == "POST":
                item = {"id": sum(map(len, self.comments.values())) + 1, "body": request.json()["body"]}
                self.comments.setdefault(key, []).append(item)
                return Answer(201, item)
            return Answer(200, self.comments.get(key, []))
        return None

    def _create(self, repo: Path, name: str, body: dict[str, Any]) -> Answer:
        head = branch_head(repo, body.get("head", ""))
        if head is None or branch_head(repo, body.get("base", "")) is None:
            return Answer(422, {"message": "Validation Failed", "errors": [{"message": "head or base invalid"}]})
        if any(p["state"] == "open" and p["head"]["ref"] == body["head"] for p in self.pulls.get(name, [])):
            return Answer(422, {"message": "Validation Failed",
                                "errors": [{"message": f"A pull request already exists for {body['head']}."}]})
        number = 1 + sum(len(p) for p in self.pulls.values())
        pr = {"number": number, "state": "open", "merged": False, "title": body["title"], "body": body.get("body"),
              "head": {"ref": body["head"], "sha": head}, "base": {"ref": body["base"]}, "merge_commit_sha": None,
              "html_url": f"{self.server.url}/{self.owner}/{name}/pull/{number}",
              "created_at": "2026-01-01T00:00:00Z"}
        self.pulls.setdefault(name, []).append(pr)
        return Answer(201, self._view(repo, pr))

    def _view(self, repo: Path, pr: dict[str, Any]) -> dict[str, Any]:
        view = {**pr, "head": dict(pr["head"]), "base": dict(pr["base"])}
        if pr["state"] == "open":  # the head follows the branch; mergeability is computed
            view["head"]["sha"] = branch_head(repo, pr["head"]["ref"]) or pr["head"]["sha"]
            base = branch_head(repo, pr["base"]["ref"])
            view["mergeable"] = bool(base and merge_tree(repo, base, view["head"]["sha"]))
            view["mergeable_state"] = "clean" if view["mergeable"] else "dirty"
        return view

    def _merge(self, repo: Path, pr: dict[str, Any], body: dict[str, Any]) -> Answer:
        view = self._view(repo, pr)
        if pr["state"] != "open":
            return Answer(405, {"message": "Pull Request is not mergeable"})
        if body.get("sha") != view["head"]["sha"]:
            return Answer(409, {"message": "Head branch was modified. Review and try the merge again."})
        if not view["mergeable"]:
            return Answer(405, {"message": "Pull Request is not mergeable"})
        method = body.get("merge_method", "merge")
        if method not in ("merge", "squash"):
            return Answer(422, {"message": f"merge_method {method} is not supported by the fake"})
        message = f"{body.get('commit_title', 'Merge')}\n\n{body.get('commit_message', '')}"
        sha = merge(repo, target=pr["base"]["ref"], head=view["head"]["sha"], message=message,
                    squash=method == "squash")
        pr.update({"state": "closed", "merged": True, "merge_commit_sha": sha, "head": view["head"]})
        return Answer(200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"})
