"""Bringing the counties' existing archives into this one (`arkiv import`): objects found in
folders, on media, in zip files or pulled from a running PACS, each through the ingest path and
each traced to where it was found."""
