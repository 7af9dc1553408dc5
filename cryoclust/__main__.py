from cryoclust.cli import main

raise SystemExit(main())
