"""The production settings with one more URL (bench/floor_urls.py): what the
stack costs before the gate does anything.
"""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.floor_urls"
