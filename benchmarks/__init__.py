"""One benchmark per module, run from the repository root as `python -m benchmarks.<name>` (see RESULTS.md);
`common` holds what they share."""
