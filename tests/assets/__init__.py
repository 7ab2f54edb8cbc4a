"""Tests of heaters_assets."""
