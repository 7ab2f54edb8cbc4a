"""Tests of heaters_resources."""
