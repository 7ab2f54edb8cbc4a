"""The browser review app (`heaters review`): a queue of pending clips, review actions that
become Dagster runs through the review-action sensor, and undo. See `app.create_app`."""

from heaters_resources.review.app import ReviewConfig, create_app
from heaters_resources.review.security import check_bind

__all__ = ["ReviewConfig", "check_bind", "create_app"]
