"""Assets grouped by domain: source videos (ingest, splice) and clips (artifacts)."""
