"""GitHub REST through httpx: pull requests, their reviews and commits, for `outcomes sync`.

One `Client` per sync, the one API client (loopmeter/http_api.py) with GitHub's options:
`Link` pagination, waits on 403/429 rate limits (`Retry-After`, else `X-RateLimit-Reset`) up
to `max_wait_s` per wait, retries 5xx and dropped connections `retries` times; a bad token,
a refusal or a body that is not JSON is one `GitHubError` line. A PR's reviews and commits
are read by a few threads at once.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from loopmeter.errors import LoopmeterError
from loopmeter.http_api import ApiHttp, Failure, check_api_url
from loopmeter.outcomes import trailers

PUBLIC_API = "https://api.github.com"
MAX_PAGES = 1000  # 100,000 PRs at 100 a page: a Link loop cannot run forever
MAX_BODY = 32 * 1024 * 1024
_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")


class GitHubError(LoopmeterError):
    """The code host refused or answered something unreadable: one line, with a hint.
    `rows`: the PRs read in full before it happened."""

    rows: list[dict[str, Any]] = []


def api_url(flag: str | None, env: dict[str, str] | None = None) -> str:
    """--api-url, else GITHUB_API_URL, else the public API; https, or http to this machine only
    (the token never crosses a network in clear)."""
    environ = os.environ if env is None else env
    if flag:
        return check_api_url(flag, "--api-url")
    if environ.get("GITHUB_API_URL"):
        return check_api_url(environ["GITHUB_API_URL"], "GITHUB_API_URL")
    return PUBLIC_API


def token(env: dict[str, str] | None = None) -> str | None:
    """`loopmeter auth set github` (keyring) or GITHUB_TOKEN; the environment wins."""
    from loopmeter.secrets import get_key

    value, _where = get_key("github", env)
    return value


def check_repo(name: str) -> str:
    if not _REPO.match(name):
        raise LoopmeterError(f"--github {name!r} is not OWNER/REPO", hint="e.g. --github octo-org/widgets")
    return name


def parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)


class Client(ApiHttp):
    """GitHub's REST API through the one API client (http_api.py): Link pages, 403/429 rate limits
    (`Retry-After`, else `X-RateLimit-Reset`) waited up to `max_wait_s` each, a longer one refused."""

    def __init__(self, base_url: str, token: str | None, *, max_wait_s: float = 60.0, retries: int = 3,
                 backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, workers: int = 8) -> None:
        self.workers = workers  # threads reading PRs' reviews and commits
        super().__init__(base_url, headers={"Accept": "application/vnd.github+json",
                                            "X-GitHub-Api-Version": "2022-11-28"},
                         auth_headers={"Authorization": f"Bearer {token}"} if token else None,
                         retries=retries, backoff_s=backoff_s, max_wait_s=max_wait_s, refuse_long_waits=True,
                         default_wait_s=60.0, rate_limit_403=True, max_body=MAX_BODY, max_pages=MAX_PAGES,
                         max_connections=max(16, workers), sleep=sleep, clock=clock)

    def __enter__(self) -> Client:
        return self

    def error(self, failure: Failure) -> GitHubError:
        f = failure
        if f.kind == "unreachable":
            return GitHubError(f"GitHub at {self.base_url} unreachable: {f.detail.split(':')[0]}",
                               hint="check --api-url / GITHUB_API_URL and the network")
        if f.kind in ("rate_limited", "too_many_waits"):
            return GitHubError(f"GitHub rate limit: the next request is allowed in {f.wait_s:.0f} s"
                               if f.kind == "rate_limited" else f"GitHub rate limit: still limited after {f.tries} waits",
                               hint=f"sync waits at most {self.max_wait_s:.0f} s; run it again later")
        if f.kind == "server":
            return GitHubError(f"GitHub answered {f.status} to {f.path} {f.tries} times",
                               hint="the code host is failing; try again later")
        if f.kind == "refused" and f.status == 401:
            return GitHubError("GitHub refused the token (401 Bad credentials)",
                               hint="loopmeter auth set github, or set GITHUB_TOKEN to a valid token")
        if f.kind == "refused" and f.status in (403, 404):
            return GitHubError(f"GitHub answered {f.status} to {f.path}",
                               hint="check OWNER/REPO and that the token can read it")
        if f.kind == "not_json":
            return GitHubError(f"GitHub's answer to {f.path} is not JSON",
                               hint="check --api-url points at a GitHub REST API")
        if f.kind == "too_large":
            return GitHubError(f"GitHub's answer to {f.path} is over {MAX_BODY // 2**20} MiB")
        if f.kind == "bad_link":
            return GitHubError(f"GitHub's next-page link leaves {self.base_url}")
        if f.kind == "too_many_pages":
            return GitHubError(f"GitHub's answer to {f.path} has more than {MAX_PAGES} pages")
        return GitHubError(f"GitHub answered {f.status} to {f.path}")

    def get(self, url: str, params: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """One GET as JSON (and the answer's headers), with the waits and retries; GitHubError
        when it cannot be had."""
        return self.request_json("GET", url, params=params)

    def pages(self, url: str, params: dict[str, Any] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Each page of a list endpoint, following `Link: rel="next"`."""
        for body, page_url in self.link_pages(url, params):
            if not isinstance(body, list):
                raise GitHubError(f"GitHub's answer to {urlsplit(page_url).path} is not a list")
            yield [item for item in body if isinstance(item, dict)]

    def all(self, url: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [item for page in self.pages(url, params) for item in page]


# -- one repository ------------------------------------------------------------------------

def _login(user: Any) -> tuple[str | None, bool]:
    if not isinstance(user, dict):
        return None, False
    login = user.get("login")
    return (str(login)[:256] if login else None), user.get("type") == "Bot"


def pr_row(identity: str, item: dict[str, Any], reviews: list[dict[str, Any]],
           commits: list[dict[str, Any]]) -> dict[str, Any]:
    """A pull_request row from the list item, its reviews and its commits."""
    author, is_bot = _login(item.get("user"))
    created, merged = parse_ts(item.get("created_at")), parse_ts(item.get("merged_at"))
    closed = parse_ts(item.get("closed_at"))
    state = "merged" if merged else ("closed" if closed or item.get("state") == "closed" else "open")
    others = [r for r in reviews if _login(r.get("user"))[0] != author and not _login(r.get("user"))[1]
              and r.get("state") in ("APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED")]
    times = sorted(t for t in (parse_ts(r.get("submitted_at")) for r in others) if t)
    first_review = times[0] if times else None
    agents: set[str] = set()
    runs: list[str] = []
    shas: list[str] = []
    after_review = 0
    for c in commits:
        info: dict[str, Any] = c["commit"] if isinstance(c.get("commit"), dict) else {}
        message = str(info.get("message") or "")[:65536]
        agents.update(trailers.agents_in_message(message))
        runs += [r for r in trailers.run_ids(message) if r not in runs]
        bot = trailers.bot_agent(_login(c.get("author"))[0])
        if bot:
            agents.add(bot)
        if isinstance(c.get("sha"), str):
            shas.append(c["sha"][:64].lower())
        committer: dict[str, Any] = info["committer"] if isinstance(info.get("committer"), dict) else {}
        when = parse_ts(committer.get("date"))
        if first_review and when and when > first_review:
            after_review += 1
    bot = trailers.bot_agent(author)
    if bot:
        agents.add(bot)
    head: dict[str, Any] = item["head"] if isinstance(item.get("head"), dict) else {}
    base: dict[str, Any] = item["base"] if isinstance(item.get("base"), dict) else {}
    branch = str(head.get("ref") or "")[:256] or None
    head_repo, base_repo = (_full_name(x) for x in (head, base))
    if branch and head_repo and base_repo and head_repo != base_repo:  # from a fork: not this repository's branch
        branch = f"{head_repo.split('/')[0]}:{branch}"
    return {
        "repo": identity, "number": int(item["number"]), "host": "github",
        "title": str(item.get("title") or "")[:1000], "branch": branch,
        "base": str(base.get("ref") or "")[:256] or None, "state": state, "author": author,
        "author_is_bot": is_bot, "created_at": created, "merged_at": merged, "closed_at": closed,
        "merge_sha": (str(item["merge_commit_sha"])[:64].lower() if merged and item.get("merge_commit_sha") else None),
        "first_review_at": first_review,
        "changes_requested": sum(1 for r in others if r.get("state") == "CHANGES_REQUESTED"),
        "commits_after_review": after_review, "agents": json.dumps(sorted(agents)), "runs": json.dumps(runs),
        "updated_at": parse_ts(item.get("updated_at")),
        "reverts": trailers.reverted_pr(item.get("body") if isinstance(item.get("body"), str) else None),
        "shas": json.dumps(shas),
    }


def _full_name(side: dict[str, Any]) -> str | None:
    repo = side.get("repo")
    name = repo.get("full_name") if isinstance(repo, dict) else None
    return name.lower() if isinstance(name, str) else None


@dataclass
class RepoSync:
    repo: str  # OWNER/REPO
    identity: str
    prs: int = 0
    requests: int = 0
    waited_s: float = 0.0
    cursor: str | None = None


def fetch_repo(client: Client, repo: str, identity_of: Callable[[str], str], *,
               since: datetime | None) -> tuple[RepoSync, list[dict[str, Any]]]:
    """PRs updated after `since` (all when None), newest update first, with reviews and commits."""
    changed: list[dict[str, Any]] = []
    done = False
    for page in client.pages(f"/repos/{repo}/pulls",
                             {"state": "all", "sort": "updated", "direction": "desc", "per_page": 100}):
        for item in page:
            updated = parse_ts(item.get("updated_at"))
            if since and updated and updated < since:
                done = True
                break
            if isinstance(item.get("number"), int):
                changed.append(item)
        if done:
            break
    html = next((((i.get("base") or {}).get("repo") or {}).get("html_url") for i in changed
                 if isinstance(i.get("base"), dict) and isinstance(i["base"].get("repo"), dict)), None)
    identity = identity_of(html if isinstance(html, str) and html else f"https://github.com/{repo}")

    def details(item: dict[str, Any]) -> dict[str, Any]:
        n = item["number"]
        reviews = client.all(f"/repos/{repo}/pulls/{n}/reviews", {"per_page": 100})
        commits = client.all(f"/repos/{repo}/pulls/{n}/commits", {"per_page": 100})
        return pr_row(identity, item, reviews, commits)

    rows: list[dict[str, Any]] = []
    failure: GitHubError | None = None
    with ThreadPoolExecutor(max_workers=max(1, client.workers), thread_name_prefix="github") as pool:
        for future in [pool.submit(details, item) for item in changed]:
            try:
                rows.append(future.result())
            except GitHubError as exc:
                failure = failure or exc
                pool.shutdown(cancel_futures=True)
            except CancelledError:  # not started when the first failure came
                continue
    if failure is not None:
        failure.rows = rows  # what was read before it: stored, the cursor left where it was
        raise failure
    newest = max((r["updated_at"] for r in rows if r["updated_at"]), default=since)
    result = RepoSync(repo, identity, len(rows), client.requests, client.waited_s,
                      newest.isoformat() if newest else None)
    return result, rows
