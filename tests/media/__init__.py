"""Tests of heaters_media: pure media functions on generated and sample footage."""
