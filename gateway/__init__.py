"""A DICOM gateway: receives studies from a PACS, runs the matching app as its MAP runs it, and sends the results back.

``python -m gateway serve --config CONFIG`` starts it; ``python -m gateway jobs --config CONFIG`` lists its jobs.
Modules, one thing each: config (the YAML file), validation (is a received object storable),
storage (atomic files), grouping (study/series groups and the quiet period), routing (which app),
queue (the SQLite job queue), runner (the app subprocess), sender (C-STORE / STOW-RS), scp (the
pynetdicom service), service (the threads tying them together), cli (the commands).
"""
