import os
import sys

# The runtime is imported from the source tree, as the server's PYTHONPATH
# would have it after python.Install.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
