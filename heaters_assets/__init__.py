"""heaters_assets (see ../shared/design.md)."""
