"""Human3.6M entry point with the published command line: `python h36m_main.py --mode train --cfg h36m ...`."""
from spard.cli import h36m_main

if __name__ == "__main__":
    h36m_main()
