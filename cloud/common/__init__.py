"""The shared contract every tier imports: manifest, preprocessing, artifact paths, transport,
errors, ports, and the launcher for child processes."""
