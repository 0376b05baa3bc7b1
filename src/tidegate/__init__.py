"""tidegate: a leak-proof asyncio push gateway, and the leak detector that proves it."""

__version__ = "0.1.0"
