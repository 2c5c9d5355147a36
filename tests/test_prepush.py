"""The pre-push stdin parser: pure, so every shape git can write is checked here without git."""
from __future__ import annotations

import pytest

from cdkit.errors import EXIT_USAGE
from cdkit.prepush import PrePushInputError, RefUpdate, parse_line, parse_pre_push

A = "a" * 40
B = "b" * 40
Z40 = "0" * 40
Z64 = "0" * 64
S256 = "c" * 64


def test_empty_stdin_means_nothing_to_push() -> None:
    assert parse_pre_push(b"") == ()
    assert parse_pre_push(b"\n\n") == ()


def test_every_ref_is_parsed_not_only_the_first() -> None:
    data = (f"refs/heads/main {A} refs/heads/main {B}\n"
            f"refs/heads/topic {B} refs/heads/topic {Z40}\n"
            f"refs/tags/v1 {A} refs/tags/v1 {Z40}\n").encode()
    updates = parse_pre_push(data)
    assert [u.remote_ref for u in updates] == ["refs/heads/main", "refs/heads/topic", "refs/tags/v1"]
    assert updates[0] == RefUpdate("refs/heads/main", A, "refs/heads/main", B)
    assert not updates[0].is_new and updates[1].is_new
    assert updates[2].is_tag and not updates[0].is_tag


def test_a_thousand_refs() -> None:
    data = b"".join(f"refs/heads/b{i} {A} refs/heads/b{i} {Z40}\n".encode() for i in range(1000))
    assert len(parse_pre_push(data)) == 1000


@pytest.mark.parametrize("zero", [Z40, Z64, "0" * 7])
def test_zero_oids_of_any_length_mean_delete_or_new(zero: str) -> None:
    (delete,) = parse_pre_push(f"(delete) {zero} refs/heads/gone {A}\n".encode())
    assert delete.is_delete and delete.local_ref == "(delete)" and not delete.is_new
    (new,) = parse_pre_push(f"refs/heads/new {A} refs/heads/new {zero}\n".encode())
    assert new.is_new and not new.is_delete


def test_sha256_object_ids() -> None:
    (update,) = parse_pre_push(f"refs/heads/main {S256} refs/heads/main {Z64}\n".encode())
    assert update.local_oid == S256 and update.is_new


def test_local_ref_with_spaces_and_expressions() -> None:
    # `git push origin ':/fix the bug:refs/heads/x'` writes the expression as the local ref.
    (update,) = parse_pre_push(f":/fix the bug {A} refs/heads/x {Z40}\n".encode())
    assert update.local_ref == ":/fix the bug" and update.remote_ref == "refs/heads/x"
    (raw,) = parse_pre_push(f"HEAD~ {A} refs/heads/x {B}\n".encode())
    assert raw.local_ref == "HEAD~"
    (sha,) = parse_pre_push(f"{A} {A} refs/heads/x {B}\n".encode())
    assert sha.local_ref == A


def test_non_utf8_ref_bytes_survive() -> None:
    (update,) = parse_pre_push(b"refs/heads/caf\xe9 " + A.encode() + b" refs/heads/caf\xe9 " + Z40.encode() + b"\n")
    assert update.remote_ref.encode("utf-8", "surrogateescape") == b"refs/heads/caf\xe9"


def test_crlf_and_missing_final_newline_are_tolerated() -> None:
    (update,) = parse_pre_push(f"refs/heads/main {A} refs/heads/main {B}\r".encode())
    assert update.remote_oid == B
    assert len(parse_pre_push(f"refs/heads/a {A} refs/heads/a {B}\nrefs/heads/b {A} refs/heads/b {B}".encode())) == 2


@pytest.mark.parametrize("line", [
    b"garbage",
    b"refs/heads/main " + A.encode() + b" refs/heads/main",
    b"refs/heads/main xyz refs/heads/main " + B.encode(),
    b"refs/heads/main " + A.encode()[:39] + b" refs/heads/main " + B.encode(),
    b"refs/heads/main " + A.upper().encode() + b" refs/heads/main " + B.encode(),
    b" " + A.encode() + b"  " + B.encode(),
])
def test_malformed_lines_are_refused_with_their_line_number(line: bytes) -> None:
    with pytest.raises(PrePushInputError) as info:
        parse_pre_push(f"refs/heads/ok {A} refs/heads/ok {B}\n".encode() + line + b"\n")
    assert "line 2" in str(info.value)
    assert info.value.exit_code == EXIT_USAGE


def test_parse_line_numbers_default_to_one() -> None:
    with pytest.raises(PrePushInputError, match="line 1"):
        parse_line(b"nope")


@pytest.mark.parametrize("byte", [b"\x00", b"\x01", b"\t", b"\x1b", b"\x7f"])
@pytest.mark.parametrize("where", ["local ref", "remote ref", "oid"])
def test_control_bytes_are_refused_with_their_line_number(byte: bytes, where: str) -> None:
    # git forbids them in ref names; a NUL used to escape as `ValueError: embedded null byte` (exit 3)
    local, remote, oid = b"refs/heads/a", b"refs/heads/a", A.encode()
    if where == "local ref":
        local += byte
    elif where == "remote ref":
        remote += byte
    else:
        oid += byte
    line = local + b" " + oid + b" " + remote + b" " + Z40.encode()
    with pytest.raises(PrePushInputError) as info:
        parse_pre_push(f"refs/heads/ok {A} refs/heads/ok {B}\n".encode() + line + b"\n")
    assert f"pre-push stdin line 2: control byte 0x{byte[0]:02x} at column " in str(info.value)
    assert info.value.exit_code == EXIT_USAGE
