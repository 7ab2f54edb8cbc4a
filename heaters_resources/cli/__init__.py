"""The `heaters` command (`main.app`): set-up and platform commands (`platform`), similarity
search and embeddings (`search`), the review page and export (`review`)."""
