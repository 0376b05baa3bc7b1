"""Runnable examples for tidegate. They are plain asyncio and threading code: no tidegate import."""
