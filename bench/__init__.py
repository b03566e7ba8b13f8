"""Load and scale benchmarks with their recorded results (bench/RESULTS.md)."""
