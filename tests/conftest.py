import os
import sys
from pathlib import Path

# tests/ holds helper modules (notebook_runner) next to the tests
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the test suite may touch the network
