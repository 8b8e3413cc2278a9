"""Benchmarks: each script starts what it measures on loopback, prints its figures and stops it all."""
