"""Frame sources: one module per kind (camera, file, URL, folder), found by edge.sources.base,
read on a thread by edge.sources.reader."""
