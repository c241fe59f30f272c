"""Subcommand implementations called by the `avatar` CLI (each `main(cfg) -> exit code`)."""
