"""heaters_resources: state and storage (ARCHITECTURE.md, "Layers")."""
