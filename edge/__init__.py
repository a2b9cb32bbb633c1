"""The edge agent: OpenVINO inference next to the camera, the Cascade gRPC server, the demo.
Top of the import graph (edge -> router -> cloud); hosts the `edgecascade` CLI dispatcher."""
