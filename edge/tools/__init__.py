"""Developer tools: the demo, benchmarks, the frame runner, fleet status, a child agent."""
