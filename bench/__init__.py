"""Benchmarks: ``make bench`` runs them all; each prints its numbers and ratios."""
