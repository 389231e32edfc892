from registry.cli import run

run()
