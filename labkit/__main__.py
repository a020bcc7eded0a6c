"""`python -m labkit COMMAND ...` is the `labkit` command (labkit.commands)."""

from labkit.commands import main

raise SystemExit(main())
