from flex_bridge.cli import main

raise SystemExit(main())
