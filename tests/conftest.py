"""Shared pytest set-up: puts tests/ on sys.path so suites import ``support``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
