"""``python -m kafkaupstream`` is the same as the ``kafkaupstream`` command."""

import sys

from kafkaupstream.cli import main

sys.exit(main())
