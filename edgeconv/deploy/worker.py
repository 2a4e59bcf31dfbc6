"""``python -m edgeconv.deploy.worker SPEC_JSON``: time one backend in this fresh process and
print ``{"samples_ms", "rss_before_load_kb", "rss_peak_kb"}`` as one JSON line (see
:mod:`edgeconv.deploy.backends`)."""

import json
import sys

from edgeconv.deploy.backends import _worker

if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
