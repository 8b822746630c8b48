from projections.cli import main

raise SystemExit(main())
