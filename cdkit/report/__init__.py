"""Reporters: each meets `cdkit.runner.Reporter` and turns stage events into one kind of record."""
