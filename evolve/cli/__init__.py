"""The command line: `evolve.cli.main:main` is the entry point; one module per command group,
`display` below them all."""
