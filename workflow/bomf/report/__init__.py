"""Everything after test evaluation: the paper's tables, the cost table, the figures, the paired bootstrap,
run diagnostics, exported models' cards, provenance, and publishing a run's small records."""
