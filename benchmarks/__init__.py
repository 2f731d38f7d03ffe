"""One benchmark per module, run from the repository root as `python -m benchmarks.<name>` (figures in RESULTS.md).
Shared by them: `common` (paths, machine description, timing windows, peak RSS, AUC, RESULTS.md sections),
`london_faces` (the London set detected and aligned, also the tests' `london_faces` fixture) and `stage_stats`
(per-stage busy time from the actors' stats lines)."""
