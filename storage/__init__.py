"""Storage: the index database and the blob store.

Nothing outside this package imports SQLAlchemy or touches the data directory; the core (`arkiv`)
talks to storage through the small interfaces defined here (`BlobStore`, `Index`) and the plain
records in `storage.records`.
"""
