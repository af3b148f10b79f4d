import sys

from axon.worker.host import main

sys.exit(main())
