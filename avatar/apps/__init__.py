"""The `avatar` command's subcommands (each module's ``main(cfg) -> exit code``) and what the
command needs around them: the config schema (``schema``), the command-line check (``check``),
``--help`` pages (``help``), shell completion (``completion``), failed-run clean-up (``run_folder``)."""
