"""cdkit: continuous delivery and continuous deployment on GitHub."""
from __future__ import annotations

__version__ = "0.1.0"

# The pipeline file's names, here rather than in cdkit.config: the pre-push hook looks for them
# without importing config (or pathlib). Both spellings are found; both at once is an error.
DEFAULT_CONFIG = ".cdkit.yml"
CONFIG_NAMES = (DEFAULT_CONFIG, ".cdkit.yaml")
