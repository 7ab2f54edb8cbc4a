"""heaters_assets: the Dagster definitions of Heaters (see ``definitions.py``).

Backfill policies and a few sensor parameters are marked beta by Dagster; we rely on them
deliberately, so their warnings are silenced here instead of in every log line.
"""

import warnings

from dagster import BetaWarning

warnings.filterwarnings("ignore", category=BetaWarning)
