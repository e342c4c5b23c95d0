"""Performance and quality benchmarks; each script appends its table to benchmarks/RESULTS.md."""
