"""The ModelSync client: resumable, verified downloads of published model versions."""
