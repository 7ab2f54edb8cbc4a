"""heaters_resources (see ../shared/design.md)."""
