"""cdkit: continuous delivery and continuous deployment on GitHub."""
from __future__ import annotations

__version__ = "0.1.0"
