"""lumir subpackage."""

from __future__ import annotations
