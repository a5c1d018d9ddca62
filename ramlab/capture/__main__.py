"""``python -m ramlab.capture OUT_DIR [options]``: same as ``ramlab capture``."""

from ramlab.capture.run import capture_main

raise SystemExit(capture_main())
