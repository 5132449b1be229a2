"""``lumir demo``: an offline tour of lumir on sample photos bundled with Python packages (and Flickr8k if present).

- :mod:`lumir.demo.samples`: the sample photos (scikit-image, scikit-learn, matplotlib) and our captions of them;
- :mod:`lumir.demo.run`: :func:`run_demo` builds the indexes, runs the queries and writes the HTML gallery.
"""

from __future__ import annotations

from lumir.demo.run import DemoResult, TopHit, find_flickr8k, run_demo
from lumir.demo.samples import SAMPLE_PHOTOS, DemoWarning, SamplePhoto, collect_samples

__all__ = [
    "SAMPLE_PHOTOS",
    "DemoResult",
    "DemoWarning",
    "SamplePhoto",
    "TopHit",
    "collect_samples",
    "find_flickr8k",
    "run_demo",
]
