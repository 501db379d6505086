"""asv tools: result renaming, scratch configurations, spreads between runs, and the offline dashboard."""
