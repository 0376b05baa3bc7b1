"""Suite-wide hygiene: asyncio debug mode for every loop, and pytester for plugin tests.

The leak check itself is on for every test through ``leaks = true`` in
pyproject.toml (the tidegate.leaks pytest plugin).
"""

import os

# Read by asyncio when each event loop is created, so set before any test runs.
os.environ["PYTHONASYNCIODEBUG"] = "1"

pytest_plugins = ["pytester"]
