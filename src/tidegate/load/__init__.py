"""`tidegate load`: the before/after leak test as a tool, against a gateway or any HTTP service.

Read the task count, run a concurrent load with faults, let it drain, read the count again,
and diff the grouped stack dumps to name the line that leaked. The pure parts (dump parsing,
statistics, the verdict) are separate modules from the I/O (client processes, pushers, the
admin poller, the live display, the PNG). docs/load.md is the user's guide.
"""
