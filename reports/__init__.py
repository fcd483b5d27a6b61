"""Reports: per-target comparison tables built from the store (Markdown, JSON, CSV)."""
