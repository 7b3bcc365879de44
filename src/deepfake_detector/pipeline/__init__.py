"""The stages' logic (called by ``stages/``): sharded batch runs on Dask, ingest adapters, one module per stage."""
