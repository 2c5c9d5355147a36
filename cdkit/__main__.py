from __future__ import annotations

from cdkit.cli import main

if __name__ == "__main__":
    main()
