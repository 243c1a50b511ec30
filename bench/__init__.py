"""Benchmarks: each measures Deduction beside a baseline run on the same machine, same run."""
