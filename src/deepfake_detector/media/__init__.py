"""Pictures on disk: the first look at a file (probe), video decoding, image encoding and crop geometry, tar shards."""
