"""`python -m bench.soak` (`make soak`)."""

from bench.soak.run import main

raise SystemExit(main())
