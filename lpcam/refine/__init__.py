"""Seeds into pseudo masks: IRN's second stage (the random walk over a class-boundary map)."""
