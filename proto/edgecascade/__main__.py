"""`python -m edgecascade`: the same CLI as the `edgecascade` entry point."""

from edgecascade.edge.cli import app

app(prog_name="edgecascade")
