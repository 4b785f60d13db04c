import os
import sys

# ``python -m`` puts the working folder first on the import path; the ``dragon-lightning`` script does
# not. Take it off, so that a file lying in the working folder is never imported because a config or a
# checkpoint names it (Python's own -P flag does the same).
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.pop(0)

from dragon_lightning.commands import main

if __name__ == "__main__":
    main()
