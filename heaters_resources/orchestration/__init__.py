"""What the Dagster layer and the CLI share without importing `heaters_assets`: the
ConfigurableResources (`resources`), the Dagster instance set-up (`instance`) and every job,
asset, partition and tag name (`names`)."""
