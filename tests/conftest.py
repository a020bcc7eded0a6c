import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# tests/ holds helper modules (notebook_runner) next to the tests
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the test suite may touch the network
# A fresh cache per session (labkit.paths reads it at import, after this file): the tests start
# cold, as on a new machine, whatever ~/.cache/labkit holds; notebooks run by the tests inherit it.
if "LABKIT_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="labkit-test-cache-")
    os.environ["LABKIT_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
