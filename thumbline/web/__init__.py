"""The gateway's web assets: pages, scripts, styles and vendored libraries under ``static/``,
installed with the package (no CDN, no Node.js at install or run time)."""

from __future__ import annotations

from pathlib import Path

#: The folder the gateway serves at ``/assets/`` (files in the package, not in a zip).
STATIC = Path(__file__).resolve().parent / "static"
