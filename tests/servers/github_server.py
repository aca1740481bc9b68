"""A scripted GitHub REST server on 127.0.0.1: pull requests, their reviews and commits, with
`Link` pagination, a bearer token, and faults a test queues (rate limits, 5xx, bad JSON).

    srv = GitHubServer(token="t0k")
    srv.add_pr("o/r", pr(1, "feature-a", merged="2026-11-02T10:00:00Z"), commits=[commit("fix", trailer)])
    srv.fail("/pulls", 429, headers={"Retry-After": "1"})  # the next matching request
    with srv:
        ... GITHUB_API_URL=srv.url ...

Shapes follow docs.github.com's REST reference (see /work/shared/formats/VENDOR_APIS.md, B).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers._http import QuietHandler, ScriptedServer

USERS = {"alice": "User", "bob": "User", "claude[bot]": "Bot", "dependabot[bot]": "Bot",
         "copilot-swe-agent[bot]": "Bot", "devin-ai-integration[bot]": "Bot"}


def pr(number: int, branch: str, *, title: str | None = None, author: str = "alice", created: str,
       merged: str | None = None, closed: str | None = None, updated: str | None = None,
       body: str = "", merge_sha: str | None = None, repo: str = "o/r") -> dict[str, Any]:
    """One PR as the list endpoint returns it. A merged PR is closed when it merged."""
    closed = closed or merged
    return {
        "number": number, "title": title or f"PR {number}", "body": body, "draft": False,
        "state": "closed" if closed else "open",
        "user": {"login": author, "type": USERS.get(author, "User")},
        "created_at": created, "updated_at": updated or closed or created, "closed_at": closed,
        "merged_at": merged, "merge_commit_sha": merge_sha, "labels": [],
        "head": {"ref": branch, "sha": f"{number:040x}"},
        "base": {"ref": "main", "repo": {"full_name": repo, "html_url": f"https://github.com/{repo}"}},
    }


def review(state: str, submitted: str, user: str = "bob") -> dict[str, Any]:
    return {"state": state, "submitted_at": submitted, "user": {"login": user, "type": USERS.get(user, "User")},
            "commit_id": "0" * 40}


def commit(message: str, date: str = "2026-11-01T09:00:00Z", sha: str | None = None,
           author: str = "alice") -> dict[str, Any]:
    return {"sha": sha or f"{abs(hash((message, date))):040x}"[:40],
            "commit": {"message": message, "author": {"name": author, "email": f"{author}@example.com", "date": date},
                       "committer": {"name": author, "email": f"{author}@example.com", "date": date}},
            "author": {"login": author, "type": USERS.get(author, "User")}}


@dataclass
class Fault:
    path_part: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"message": "scripted fault"}'
    times: int = 1


@dataclass
class RepoData:
    prs: dict[int, dict[str, Any]] = field(default_factory=dict)
    reviews: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    commits: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


class GitHubServer(ScriptedServer):
    thread_name = "github-server"

    def __init__(self, token: str = "good-token", per_page_max: int = 100) -> None:
        super().__init__()
        self.token = token
        self.per_page_max = per_page_max
        self.repos: dict[str, RepoData] = {}
        self.faults: list[Fault] = []
        self.hits = 0

    def add_pr(self, repo: str, pull: dict[str, Any], *, reviews: list[dict[str, Any]] | None = None,
               commits: list[dict[str, Any]] | None = None) -> None:
        data = self.repos.setdefault(repo, RepoData())
        data.prs[pull["number"]] = pull
        data.reviews[pull["number"]] = reviews or []
        data.commits[pull["number"]] = commits or []

    def fail(self, path_part: str, status: int, *, headers: dict[str, str] | None = None,
             body: bytes | None = None, times: int = 1) -> None:
        """The next `times` requests whose path contains `path_part` get this answer instead."""
        with self._lock:
            self.faults.append(Fault(path_part, status, headers or {}, body if body is not None else
                                     b'{"message": "scripted fault"}', times))

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.path_part in path and f.times > 0:
                    f.times -= 1
                    return f
        return None

    def _handler_class(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.record_request(self, None)
                server.hits += 1
                parts = urlsplit(self.path)
                if self.headers.get("Authorization") not in (f"Bearer {server.token}", f"token {server.token}"):
                    self.send_json(401, {"message": "Bad credentials", "status": "401"})
                    return
                fault = server._take_fault(parts.path)
                if fault:
                    self.send(fault.status, fault.body, "application/json", fault.headers)
                    return
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                items = server._route(parts.path, query)
                if items is None:
                    self.send_json(404, {"message": "Not Found"})
                    return
                per_page = min(int(query.get("per_page", 30)), server.per_page_max)
                page = int(query.get("page", 1))
                chunk = items[(page - 1) * per_page: page * per_page]
                headers = {"X-RateLimit-Remaining": "4999"}
                if page * per_page < len(items):
                    nxt = dict(query, page=str(page + 1), per_page=str(per_page))
                    q = "&".join(f"{k}={v}" for k, v in nxt.items())
                    last = (len(items) + per_page - 1) // per_page
                    headers["Link"] = (f'<{server.url}{parts.path}?{q}>; rel="next", '
                                       f'<{server.url}{parts.path}?page={last}>; rel="last"')
                self.send_json(200, chunk, headers)

        return Handler

    def _route(self, path: str, query: dict[str, str]) -> list[dict[str, Any]] | None:
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/pulls(?:/(\d+)/(reviews|commits))?", path)
        if not m or m.group(1) not in self.repos:
            return None
        data = self.repos[m.group(1)]
        if m.group(2):
            n = int(m.group(2))
            if n not in data.prs:
                return None
            return (data.reviews if m.group(3) == "reviews" else data.commits)[n]
        prs = list(data.prs.values())
        if query.get("sort") == "updated":
            prs.sort(key=lambda p: p["updated_at"], reverse=query.get("direction", "desc") == "desc")
        else:
            prs.sort(key=lambda p: p["created_at"], reverse=query.get("direction", "desc") == "desc")
        return prs


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()
