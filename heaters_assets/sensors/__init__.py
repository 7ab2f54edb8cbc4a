"""One sensor per module; each keeps a cursor so it acts exactly once per input."""
