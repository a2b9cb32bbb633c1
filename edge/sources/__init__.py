"""Frame sources: camera, video file, URL and folder, read as one stream of frames."""
