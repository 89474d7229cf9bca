from mlmarket_client.cli import main

raise SystemExit(main())
