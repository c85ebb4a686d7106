from nfu_tui.cli import main

raise SystemExit(main())
