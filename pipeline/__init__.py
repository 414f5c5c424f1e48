"""The ground floor: what every stage needs (grid, config, errors, progress, fingerprints).

Nothing here imports another urbanfusion package; ``ingest``, ``preprocess``, ``models`` and
``workflows`` stand on it.
"""
