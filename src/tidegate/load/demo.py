"""`tidegate demo incident` (placeholder while the load lands)."""

from __future__ import annotations

import argparse


def register_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pass
