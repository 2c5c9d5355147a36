"""cdkit.github and cdkit.remote: settings, the retry policy for every fault, and no token ever shown.

GitHub is faked at the HTTP boundary with `responses`; sleeping and the clock are injected.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from cdkit.github import (
    GitHubClient,
    GitHubDeferred,
    GitHubRefused,
    RetryPolicy,
    actions_run_url,
    resolve_api_url,
    resolve_repository,
    resolve_token,
)
from cdkit.remote import parse_repository
from tests.helpers import git, make_repo

API = "https://api.github.com:443"  # PyGithub spells out the port
REPO = "octo/app"
SHA = "a" * 40
TOKEN = "ghs_" + "S3cr3t" * 6


class Sleeper:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_client(sleeper: Sleeper, *, max_wait: float = 60.0, now: float = 1_000_000.0,
                token: str = TOKEN) -> GitHubClient:
    return GitHubClient(token, policy=RetryPolicy(max_wait=max_wait), environ={}, sleep=sleeper,
                        clock=lambda: now, rng=lambda: 0.5)


def status_url() -> str:
    return f"{API}/repos/{REPO}/statuses/{SHA}"


def post_status(client: GitHubClient) -> int:
    return client.create_status(REPO, SHA, state="success", context="cdkit/test", description="passed",
                                target_url=None)


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("https://github.com/octo/app.git", "octo/app"),
    ("https://github.com/octo/app", "octo/app"),
    ("https://github.com/octo/app/", "octo/app"),
    ("https://x-access-token:ghs_abc@github.com/octo/app.git", "octo/app"),
    ("ssh://git@github.com/octo/app.git", "octo/app"),
    ("ssh://git@ghe.example.com:2222/octo/app", "octo/app"),
    ("git@github.com:octo/app.git", "octo/app"),
    ("git@github.com:octo/my.repo", "octo/my.repo"),
    ("github.com:octo/app", "octo/app"),
    ("git://github.com/octo/app.git", "octo/app"),
    ("/srv/git/app.git", None),
    ("../app", None),
    ("file:///srv/octo/app.git", None),
    ("C:/octo/app", None),
    ("https://github.com/octo", None),
    ("", None),
])
def test_parse_repository(url: str, expected: str | None) -> None:
    assert parse_repository(url) == expected


def test_token_comes_from_the_option_then_github_token_then_gh_token() -> None:
    env = {"GITHUB_TOKEN": "from-env", "GH_TOKEN": "from-gh"}
    assert resolve_token("from-option", env) == "from-option"
    assert resolve_token(None, env) == "from-env"
    assert resolve_token(None, {"GH_TOKEN": "from-gh"}) == "from-gh"
    assert resolve_token(None, {"GITHUB_TOKEN": " "}) is None


def test_api_url_defaults_to_github_com_and_follows_enterprise_server() -> None:
    assert resolve_api_url({}) == "https://api.github.com"
    assert resolve_api_url({"GITHUB_API_URL": "https://ghe.example.com/api/v3/"}) == "https://ghe.example.com/api/v3"


def test_repository_from_env_else_from_the_remote(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    assert resolve_repository({}, cwd=repo) is None
    git(repo, "remote", "add", "origin", "git@github.com:octo/app.git")
    assert resolve_repository({}, cwd=repo) == "octo/app"
    assert resolve_repository({"GITHUB_REPOSITORY": "other/thing"}, cwd=repo) == "other/thing"


def test_details_url_points_at_the_actions_run() -> None:
    env = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": REPO, "GITHUB_RUN_ID": "42"}
    assert actions_run_url(env) == "https://github.com/octo/app/actions/runs/42"
    assert actions_run_url({**env, "GITHUB_RUN_ATTEMPT": "2"}) == "https://github.com/octo/app/actions/runs/42/attempts/2"
    assert actions_run_url({}) is None


def test_pygithub_is_built_without_throttle_or_retries() -> None:
    client = make_client(Sleeper())
    requester = client.github.requester
    assert requester._Requester__seconds_between_requests is None
    assert requester._Requester__seconds_between_writes is None
    assert requester._Requester__retry is None


# --- the fast path ------------------------------------------------------------------------------------


@responses.activate
def test_a_status_is_one_request_and_no_sleep() -> None:
    responses.post(status_url(), json={"id": 7, "state": "success"}, status=201)
    sleeper = Sleeper()
    client = make_client(sleeper)
    assert post_status(client) == 7
    assert len(responses.calls) == 1
    assert sleeper.calls == []
    assert client.stats.requests == 1


# --- transient faults ------------------------------------------------------------------------------------


@responses.activate
def test_5xx_is_retried_with_jittered_backoff() -> None:
    responses.post(status_url(), json={"message": "Server Error"}, status=502)
    responses.post(status_url(), json={"message": "Server Error"}, status=503)
    responses.post(status_url(), json={"id": 7}, status=201)
    sleeper = Sleeper()
    assert post_status(make_client(sleeper)) == 7
    assert len(responses.calls) == 3
    assert sleeper.calls == [0.375, 0.75]  # rng 0.5: between half and all of 0.5 * 2**n


@responses.activate
def test_connection_errors_are_bounded_then_deferred() -> None:
    responses.post(status_url(), body=requests.exceptions.ConnectionError("Connection refused"))
    sleeper = Sleeper()
    with pytest.raises(GitHubDeferred) as caught:
        post_status(make_client(sleeper))
    assert len(responses.calls) == 4
    assert len(sleeper.calls) == 3 and max(sleeper.calls) <= 8
    assert caught.value.kind == "unreachable" and caught.value.stop_all
    assert "after 4 tries" in str(caught.value)


@responses.activate
def test_timeouts_are_retried() -> None:
    responses.post(status_url(), body=requests.exceptions.ReadTimeout("read timed out"))
    responses.post(status_url(), json={"id": 9}, status=201)
    assert post_status(make_client(Sleeper())) == 9


# --- rate limits ---------------------------------------------------------------------------------------------


@responses.activate
def test_secondary_rate_limit_waits_for_retry_after() -> None:
    responses.post(status_url(), status=403, headers={"Retry-After": "3"},
                   json={"message": "You have exceeded a secondary rate limit. Please wait a few minutes before "
                                    "you try again."})
    responses.post(status_url(), json={"id": 7}, status=201)
    sleeper = Sleeper()
    assert post_status(make_client(sleeper)) == 7
    assert sleeper.calls == [3.0]


@responses.activate
def test_primary_rate_limit_waits_until_the_reset() -> None:
    now = 1_000_000.0
    responses.post(status_url(), status=429, json={"message": "API rate limit exceeded"},
                   headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 20)})
    responses.post(status_url(), json={"id": 7}, status=201)
    sleeper = Sleeper()
    assert post_status(make_client(sleeper, now=now)) == 7
    assert sleeper.calls == [21.0]


@responses.activate
def test_a_wait_longer_than_max_wait_defers_without_sleeping() -> None:
    responses.post(status_url(), status=403, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1000600"},
                   json={"message": "API rate limit exceeded for installation ID 1."})
    sleeper = Sleeper()
    with pytest.raises(GitHubDeferred) as caught:
        post_status(make_client(sleeper, max_wait=5, now=1_000_000.0))
    assert sleeper.calls == []
    assert len(responses.calls) == 1
    assert caught.value.kind == "rate_limited"
    assert "--max-wait" in str(caught.value)


@responses.activate
def test_a_shared_client_waits_at_most_what_its_borrower_allows_and_then_its_own_budget_again() -> None:
    limited = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1000020"}  # a 21 s wait
    responses.post(status_url(), status=429, json={"message": "API rate limit exceeded"}, headers=limited)
    sleeper = Sleeper()
    client = make_client(sleeper, max_wait=60, now=1_000_000.0)
    with client.waiting_at_most(10), pytest.raises(GitHubDeferred):
        post_status(client)
    assert sleeper.calls == []
    responses.post(status_url(), status=429, json={"message": "API rate limit exceeded"}, headers=limited)
    responses.post(status_url(), json={"id": 7}, status=201)
    assert post_status(client) == 7  # the control: outside, its own 60 s allow the wait
    assert sleeper.calls == [21.0]


# --- the commit is not on GitHub yet ---------------------------------------------------------------------------


@responses.activate
def test_no_commit_found_is_retried_a_few_times_then_deferred() -> None:
    responses.post(status_url(), status=422, json={"message": f"No commit found for SHA: {SHA}"})
    sleeper = Sleeper()
    with pytest.raises(GitHubDeferred) as caught:
        post_status(make_client(sleeper))
    assert len(responses.calls) == 3
    assert len(sleeper.calls) == 2
    assert caught.value.kind == "not_yet" and not caught.value.stop_all
    assert "cdkit sync" in str(caught.value)


@responses.activate
def test_no_commit_found_then_success() -> None:
    responses.post(status_url(), status=422, json={"message": f"No commit found for SHA: {SHA}"})
    responses.post(status_url(), json={"id": 3}, status=201)
    assert post_status(make_client(Sleeper())) == 3


# --- never retried -----------------------------------------------------------------------------------------------


@responses.activate
def test_401_is_not_retried_and_the_token_is_not_shown() -> None:
    responses.post(status_url(), status=401, json={"message": "Bad credentials"})
    sleeper = Sleeper()
    with pytest.raises(GitHubRefused) as caught:
        post_status(make_client(sleeper))
    assert len(responses.calls) == 1 and sleeper.calls == []
    message = str(caught.value)
    assert "401 Bad credentials" in message and "GITHUB_TOKEN" in message
    assert TOKEN not in message


@responses.activate
def test_permission_403_names_the_missing_permissions_scope() -> None:
    responses.post(status_url(), status=403, json={"message": "Resource not accessible by integration"})
    with pytest.raises(GitHubRefused) as caught:
        post_status(make_client(Sleeper()))
    assert len(responses.calls) == 1
    assert "`statuses: write`" in str(caught.value)
    assert "permissions: {statuses: write}" in str(caught.value)


@responses.activate
def test_check_run_permission_403_names_checks_write() -> None:
    responses.post(f"{API}/repos/{REPO}/check-runs", status=403,
                   json={"message": "Resource not accessible by integration"})
    with pytest.raises(GitHubRefused) as caught:
        make_client(Sleeper()).create_check_run(REPO, {"name": "cdkit/x", "head_sha": SHA, "external_id": "e"})
    assert "`checks: write`" in str(caught.value)
    assert len(responses.calls) == 1


@responses.activate
def test_validation_422_is_not_retried() -> None:
    responses.post(status_url(), status=422, json={"message": "Validation Failed", "errors": [
        {"resource": "Status", "field": "description", "code": "custom",
         "message": "description is too long (maximum is 140 characters)"}]})
    with pytest.raises(GitHubRefused) as caught:
        post_status(make_client(Sleeper()))
    assert len(responses.calls) == 1
    assert "description is too long" in str(caught.value)


@responses.activate
def test_404_says_wrong_repository_or_no_access() -> None:
    responses.post(status_url(), status=404, json={"message": "Not Found"})
    with pytest.raises(GitHubRefused) as caught:
        post_status(make_client(Sleeper()))
    assert "wrong repository" in str(caught.value)


# --- exactly once for check runs --------------------------------------------------------------------------------


def check_runs_list(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"total_count": len(runs), "check_runs": runs}


@responses.activate
def test_a_create_that_may_have_landed_is_looked_up_not_repeated() -> None:
    responses.post(f"{API}/repos/{REPO}/check-runs", status=502, json={"message": "Server Error"})
    lookup = responses.get(f"{API}/repos/{REPO}/commits/{SHA}/check-runs",
                           json=check_runs_list([{"id": 55, "name": "cdkit/x", "external_id": "run-1:x"}]))
    client = make_client(Sleeper())
    assert client.create_check_run(REPO, {"name": "cdkit/x", "head_sha": SHA, "external_id": "run-1:x"}) == 55
    assert [c.request.method for c in responses.calls] == ["POST", "GET"]
    assert lookup.calls[0].request.params == {"check_name": "cdkit/x", "filter": "all", "per_page": "100"}


@responses.activate
def test_a_create_that_did_not_land_is_sent_again_after_the_lookup() -> None:
    responses.post(f"{API}/repos/{REPO}/check-runs", status=502, json={"message": "Server Error"})
    responses.get(f"{API}/repos/{REPO}/commits/{SHA}/check-runs",
                  json=check_runs_list([{"id": 1, "name": "cdkit/x", "external_id": "someone-else"}]))
    responses.post(f"{API}/repos/{REPO}/check-runs", status=201, json={"id": 56, "name": "cdkit/x"})
    client = make_client(Sleeper())
    assert client.create_check_run(REPO, {"name": "cdkit/x", "head_sha": SHA, "external_id": "run-1:x"}) == 56
    assert [c.request.method for c in responses.calls] == ["POST", "GET", "POST"]


@responses.activate
def test_a_create_refused_before_connecting_needs_no_lookup() -> None:
    responses.post(f"{API}/repos/{REPO}/check-runs",
                   body=requests.exceptions.ConnectionError("NewConnectionError: Connection refused"))
    responses.post(f"{API}/repos/{REPO}/check-runs", status=201, json={"id": 57, "name": "cdkit/x"})
    client = make_client(Sleeper())
    assert client.create_check_run(REPO, {"name": "cdkit/x", "head_sha": SHA, "external_id": "run-1:x"}) == 57
    assert [c.request.method for c in responses.calls] == ["POST", "POST"]


@responses.activate
def test_generic_request_helper_follows_pagination() -> None:
    base = f"{API}/repos/{REPO}/pulls/1/reviews"
    responses.get(base, json=[{"id": i} for i in range(100)],
                  headers={"Link": '<https://api.github.com/repos/octo/app/pulls/1/reviews?page=2>; rel="next"'},
                  match=[responses.matchers.query_param_matcher({"per_page": "100"})])
    responses.get(base, json=[{"id": 100}], match=[responses.matchers.query_param_matcher({"page": "2"})])
    items = list(make_client(Sleeper()).request_all(f"/repos/{REPO}/pulls/1/reviews"))
    assert len(items) == 101


# --- no token anywhere ------------------------------------------------------------------------------------------------


@responses.activate
def test_token_is_redacted_from_errors_even_when_github_echoes_it() -> None:
    responses.post(status_url(), status=422, json={"message": f"Validation Failed for {TOKEN}"})
    with pytest.raises(GitHubRefused) as caught:
        post_status(make_client(Sleeper()))
    assert TOKEN not in str(caught.value)
    assert "***" in str(caught.value)


@responses.activate
def test_token_is_redacted_from_pygithub_debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    import github  # noqa: F401 - PyGithub sets its logger to INFO when first imported: before at_level, not inside it

    responses.post(status_url(), json={"id": 7, "description": f"echo {TOKEN}"}, status=201)
    with caplog.at_level(logging.DEBUG, logger="github"):  # what github.enable_console_debug_logging() does
        post_status(make_client(Sleeper()))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert re.search(r"POST .*statuses", text), "PyGithub logged the request"
    assert TOKEN not in text


# --- reads within one process ---------------------------------------------------------------------------


@responses.activate
def test_a_read_is_sent_once_per_process_until_it_writes() -> None:
    deployments = f"{API}/repos/{REPO}/deployments"
    responses.get(deployments, json=[{"id": 1}])
    client = make_client(Sleeper())
    first = client.request("GET", f"/repos/{REPO}/deployments", params={"environment": "prod"})
    again = client.request("GET", f"/repos/{REPO}/deployments", params={"environment": "prod"})
    assert again == first and len(responses.calls) == 1 and client.stats.cached == 1
    other = client.request("GET", f"/repos/{REPO}/deployments", params={"environment": "staging"})
    assert other[1] == [{"id": 1}] and len(responses.calls) == 2  # another query is another read


@responses.activate
@pytest.mark.parametrize("write", ["deployment", "deployment status"])
def test_after_a_deployment_write_every_deployment_read_goes_to_github_again(write: str) -> None:
    """The attack: a deployment another machine created, or one of ours, is never hidden by an earlier read."""
    deployments = f"{API}/repos/{REPO}/deployments"
    responses.get(deployments, json=[])
    responses.get(deployments, json=[{"id": 2}])
    responses.post(deployments, json={"id": 3}, status=201)
    responses.post(f"{deployments}/3/statuses", json={"id": 9}, status=201)
    client = make_client(Sleeper())
    assert client.request("GET", f"/repos/{REPO}/deployments")[1] == []
    if write == "deployment":
        client.request("POST", f"/repos/{REPO}/deployments", body={"ref": SHA})
    else:
        client.request("POST", f"/repos/{REPO}/deployments/3/statuses", body={"state": "success"})
    assert client.request("GET", f"/repos/{REPO}/deployments")[1] == [{"id": 2}]
    assert client.stats.cached == 0


@responses.activate
@pytest.mark.parametrize("write", ["ref", "commit status"])
def test_a_write_of_the_code_refreshes_the_codes_reads_and_leaves_the_deployments_read(write: str) -> None:
    """A ref, pull request or status never changes a deployment: what was read of those is still answered (the
    control that the cache works), while the pull requests are read again."""
    deployments, pulls = f"{API}/repos/{REPO}/deployments", f"{API}/repos/{REPO}/pulls"
    responses.get(deployments, json=[{"id": 1}])
    responses.get(pulls, json=[])
    responses.get(pulls, json=[{"number": 5}])
    responses.post(f"{API}/repos/{REPO}/git/refs", json={"ref": "refs/heads/x"}, status=201)
    responses.post(status_url(), json={"id": 7, "state": "success"}, status=201)
    client = make_client(Sleeper())
    client.request("GET", f"/repos/{REPO}/deployments")
    assert client.request("GET", f"/repos/{REPO}/pulls")[1] == []
    if write == "ref":
        client.request("POST", f"/repos/{REPO}/git/refs", body={"ref": "refs/heads/x", "sha": SHA})
    else:
        post_status(client)
    assert client.request("GET", f"/repos/{REPO}/pulls")[1] == [{"number": 5}]
    assert client.request("GET", f"/repos/{REPO}/deployments")[1] == [{"id": 1}] and client.stats.cached == 1


@responses.activate
def test_a_read_older_than_its_max_age_goes_to_github_again(monkeypatch: pytest.MonkeyPatch) -> None:
    deployments = f"{API}/repos/{REPO}/deployments"
    responses.get(deployments, json=[])
    responses.get(deployments, json=[{"id": 2}])
    client = make_client(Sleeper())
    client.request("GET", f"/repos/{REPO}/deployments")
    monkeypatch.setattr("cdkit.github.READ_MAX_AGE", 0.0)  # every read is already too old
    assert client.request("GET", f"/repos/{REPO}/deployments")[1] == [{"id": 2}] and client.stats.cached == 0
