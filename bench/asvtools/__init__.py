"""asv tools: result renaming, scratch configurations, spreads between runs, the estimate of a full run,
and the offline dashboard (its published results and page fixes, and the browser that checks it)."""
