from edgecap.cli import main

raise SystemExit(main())
