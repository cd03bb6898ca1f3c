# The two commands of the README:
#   make serve   – set up and start the archive on its embedded default (SQLite + files in ./arkiv-data)
#   make test    – set up everything the tests need, then lint, type-check and run the whole suite
# Both are safe to re-run; they install only what is missing.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
ARGS ?=

.PHONY: setup system-packages node-packages minio serve test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check pip==26.0.1
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

system-packages:
	.ci/install-system-packages

serve: $(STAMP)
	$(VENV)/bin/arkiv serve $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

node-packages: system-packages
	.ci/install-node-packages

# MinIO built from source with go install (cached in ~/.cache/arkiv-tools after the first build).
minio:
	.ci/install-minio

test: system-packages node-packages minio $(STAMP) lint typecheck
	$(VENV)/bin/pytest -ra --durations=30

bench: system-packages minio $(STAMP)
	$(VENV)/bin/python -m bench.ingest $(ARGS)

# The audit benchmark needs no system packages (no DICOM peers: everything runs in-process).
# Its first run generates a synthetic log of ten million events (about 15 minutes, cached).
.PHONY: bench-audit
bench-audit: $(STAMP)
	$(VENV)/bin/python -m bench.audit $(ARGS)

# Audit events per second the one chain takes from 1, 2, 4 and 8 writer processes, on SQLite
# and on PostgreSQL (Debian's package, started on loopback by the benchmark).
.PHONY: bench-chain
bench-chain: system-packages $(STAMP)
	$(VENV)/bin/python -m bench.audit_chain $(ARGS)

# Query and retrieve (C-FIND, QIDO-RS, WADO-RS) beside Orthanc with its DICOMweb plugin, on a
# synthetic corpus of 100,000 small instances by default (ARGS="--instances 2000" for a quick look).
.PHONY: bench-query
bench-query: system-packages $(STAMP)
	$(VENV)/bin/python -m bench.query $(ARGS)

# Photo upload (POST /api/photos): 40 camera JPEGs of 5 MB by 1 and 4 clients, to arkiv embedded
# and on PostgreSQL + MinIO, and to Orthanc as DICOM (ARGS="--photos 8 --repeat 1" for a quick look).
.PHONY: bench-photos
bench-photos: system-packages minio $(STAMP)
	$(VENV)/bin/python -m bench.photos $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The clinician's viewer in headless Chromium: click on a study to its first full-resolution
# image (an 18-image full-mouth series and a panoramic), embedded and on PostgreSQL + MinIO, and
# the window/level frame rate on the panoramic (ARGS="--rounds 3" for a quick look).
.PHONY: bench-viewer
bench-viewer: system-packages minio $(STAMP)
	$(VENV)/bin/python -m bench.viewer $(ARGS)

# Bulk import (arkiv import): a folder of the ingest benchmark's objects (bench-import), and the
# same objects pulled from Orthanc over C-GET and C-MOVE (bench-import-pacs), into arkiv embedded
# and on PostgreSQL + MinIO.
.PHONY: bench-import bench-import-pacs
bench-import: system-packages minio $(STAMP)
	$(VENV)/bin/python -m bench.import_files $(ARGS)

bench-import-pacs: system-packages minio $(STAMP)
	$(VENV)/bin/python -m bench.import_pacs $(ARGS)

# VM placement: the shipped 4-blade deployment and a generated 200-host × 2,000-VM pool.
.PHONY: bench-placement
bench-placement: $(STAMP)
	$(VENV)/bin/python -m bench.placement $(ARGS)
