"""Ingest: list dataset videos into one manifest with labels, leakage groups and splits.

Each dataset layout has an adapter, one module each (:mod:`.sample`, :mod:`.folder`,
:mod:`.ffpp`, :mod:`.dfdc`, :mod:`.celebdf`), behind one interface (:class:`.sources.Adapter`:
``(SourceParams, IngestParams) -> SourceScan``) and registered by format name in
:data:`.manifest.ADAPTERS`. An adapter reads only file names and the dataset's own index
files (no decoding; :mod:`.files` holds what they share) and returns :class:`VideoEntry`
records plus the problems it met. :func:`build_manifest` (:mod:`.manifest`) then

1. joins videos into leakage groups with union-find over the links each adapter gives
   (a fake and its originals; an identity where the layout names one),
2. applies forced splits (``SourceParams.split``, FF++ official splits, Celeb-DF's test list),
   where a group whose members are forced into different splits goes wholly to the
   highest-priority one (test > val > train) and the conflict is reported,
3. splits the remaining groups of each source by ``val_fraction``/``test_fraction``
   (:func:`split_groups`, in :mod:`.splits` with the leakage groups), so every split holds
   videos of every source,
4. checks that no group appears in two splits.

Every file an adapter does not turn into a row is reported with a reason; videos listed by
an index but absent on disk become rows with status ``missing``. An ingest that finds no
usable video at all (every index broken, no media in the folders, every listed file absent)
writes its report and fails with the reason, instead of a manifest that later stages trip over.

A new layout is one more module here with a ``scan_<format>(source, params) -> SourceScan``
function, its name added to :data:`.sources.Format` and to :data:`.manifest.ADAPTERS`.

Example:
    >>> params = load_section(IngestParams, "ingest")  # doctest: +SKIP
    >>> manifest = ingest(params, Path("data/manifest.csv"), Path("outputs/ingest_report.json"))  # doctest: +SKIP
"""

from .ffpp import load_ffpp_splits
from .manifest import ADAPTERS, build_manifest, ingest
from .sources import Adapter, IngestError, IngestParams, SourceParams, SourceScan, VideoEntry
from .splits import split_groups

__all__ = [
    "ADAPTERS", "Adapter", "IngestError", "IngestParams", "SourceParams", "SourceScan", "VideoEntry",
    "build_manifest", "ingest", "load_ffpp_splits", "split_groups",
]
