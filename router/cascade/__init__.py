"""The cascade that runs inside the agent: edge first, the cloud within a latency budget."""
