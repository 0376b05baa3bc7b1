"""The detector's own tests: asyncio debug mode for every loop, and pytester for the plugin.

These run from the repository root (`make test`) and from this folder with only the
`tidegate-leaks` distribution, pytest and pytest-asyncio installed.
"""

import os

# Read by asyncio when each event loop is created, so set before any test runs.
os.environ["PYTHONASYNCIODEBUG"] = "1"

pytest_plugins = ["pytester"]
