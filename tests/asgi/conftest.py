import os
import sys

# The helpers beside the tests (_serving, the apps) import by plain name.
sys.path.insert(0, os.path.dirname(__file__))
