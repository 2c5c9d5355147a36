"""The fake GitHub itself: it refuses every request GitHub's OpenAPI description refuses.

Every end-to-end test relies on this (a request GitHub would reject fails the test), so the
validator, and the memory of shapes it already accepted, are tested as an attacker would probe them.
"""
from __future__ import annotations

from typing import Any

from tests.fake_github import Request, validate

SHA_A, SHA_B = "a1" * 20, "b2" * 20


def status(sha: str, state: str) -> Request:
    return Request(method="POST", path=f"/repos/acme/app/statuses/{sha}", query={},
                   body={"state": state, "context": "cdkit/test", "description": "d"}, token=None, headers={})


def get(path: str, **query: Any) -> Request:
    return Request(method="GET", path=path, query={k: str(v) for k, v in query.items()}, body=None, token=None,
                   headers={})


def test_a_request_the_spec_rejects_is_refused_and_its_control_is_accepted() -> None:
    assert validate(status(SHA_A, "success")) is None
    refused = validate(status(SHA_A, "green"))  # not one of GitHub's states
    assert refused is not None and "POST /repos/acme/app/statuses/" in refused


def test_an_accepted_request_for_one_commit_does_not_pass_a_wrong_one_for_another() -> None:
    assert validate(status(SHA_A, "pending")) is None
    assert validate(status(SHA_B, "pending")) is None  # the same shape: known accepted
    assert validate(status(SHA_B, "greenish")) is not None  # another body is validated afresh


def test_a_number_in_a_path_is_never_taken_for_a_commit() -> None:
    # A pull request's number is an integer: forty digits pass, a SHA's letters must not, even right after.
    assert validate(get("/repos/acme/app/pulls/" + "1" * 40 + "/reviews")) is None
    assert validate(get(f"/repos/acme/app/pulls/{SHA_A}/reviews")) is not None


def test_query_parameters_are_part_of_what_was_accepted() -> None:
    assert validate(get("/repos/acme/app/deployments", environment="prod", per_page=100)) is None
    assert validate(get("/repos/acme/app/deployments", environment="prod", per_page="many")) is not None
