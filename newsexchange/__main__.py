from newsexchange.cli import main

raise SystemExit(main())
