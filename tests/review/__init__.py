"""Tests of the review app (heaters_resources.review)."""
