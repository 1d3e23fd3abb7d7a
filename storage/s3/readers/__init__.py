"""One reader per format whose library reads object storage itself; see :mod:`storage.s3.remote`."""
