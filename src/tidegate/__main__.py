"""`python -m tidegate` runs the command line."""

from tidegate.cli import main

raise SystemExit(main())
