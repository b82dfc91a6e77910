"""The subcommands of ``disengage``, one module each.

Every module has ``add_parser(subparsers)``, which declares the subcommand
(its defaults read from the core's settings and option classes), and
``run(args)``, which checks what it was given before any work starts and
returns an exit code. :mod:`stream.cli` assembles them.
"""
