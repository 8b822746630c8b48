"""`make bench`: the ledger side by side with its comparators (see docs/benchmarks.md)."""
