"""Bundled sample media (Big Buck Bunny, (c) Blender Foundation, CC BY 3.0; see ATTRIBUTION.md)."""

from pathlib import Path

SAMPLE_VIDEO = Path(__file__).with_name("bbb_edit_360p.mp4")
SAMPLE_CUTS = [69, 146, 226, 303, 366, 425, 496]
