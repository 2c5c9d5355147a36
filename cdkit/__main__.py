from __future__ import annotations

from cdkit.entry import main

if __name__ == "__main__":
    main()
