"""`python -m deduction` runs the CLI."""

from deduction.cli import main

raise SystemExit(main())
