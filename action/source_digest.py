"""Print a digest of the files cdkit is built from, in the action's checkout (action.yml's install check).

Every file under cdkit/ (caches left out) and pyproject.toml, each by its path and its bytes, in a fixed
order: two checkouts print the same digest exactly when pip would build the same package from them.
Standard library only: it runs on the runner's Python before anything is installed.
"""
from __future__ import annotations

import hashlib
import os
import sys


def source_digest(root: str) -> str:
    digest = hashlib.sha256()
    paths = [os.path.join(root, "pyproject.toml")]
    for directory, subdirectories, names in os.walk(os.path.join(root, "cdkit")):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        paths += [os.path.join(directory, name) for name in sorted(names) if not name.endswith(".pyc")]
    for path in paths:
        digest.update(os.path.relpath(path, root).replace(os.sep, "/").encode() + b"\0")
        with open(path, "rb") as source:
            digest.update(source.read())
        digest.update(b"\0")
    return digest.hexdigest()


if __name__ == "__main__":
    print(source_digest(sys.argv[1]))
