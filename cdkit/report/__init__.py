"""Reporters: each meets `cdkit.runner.Reporter` and turns stage events into one kind of record."""

# Plan reasons (`cdkit.plan`) for stages a run did not judge: outside its trigger (`on:`) or
# `--stage`. Their results are never reported to GitHub, where they would replace one that did
# judge. Here, not in `checks`, so the pre-push hook can use it without importing the GitHub client.
NOT_REPORTED_PREFIXES = ("not selected", "not on ")
